package main

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestEvaluate(t *testing.T) {
	tests := []struct {
		formula string
		want    float64
	}{
		{"(2+6)*3", 24},
		{"2+6*3", 20},
		{"1 + 2 - 3", 0},
		{"10-4-3", 3}, // left-associative
		{"8/4/2", 1},
		{"2^3^2", 512}, // right-associative
		{"(2^3)^2", 64},
		{"-2^2", -4}, // ^ binds tighter than unary minus
		{"(-2)^2", 4},
		{"2^-1", 0.5},
		{"--3", 3},
		{"-(1+2)*-3", 9},
		{"3 * -2", -6},
		{"1.5+.25", 1.75},
		{"0.1*3", 0.30000000000000004},
		{"  7  ", 7},
		{"((((1))))", 1},
		{"4^0.5", 2},
		{"2*3^2", 18},
		{"1/3*3", 1},
		{"007", 7},
		{strings.Repeat("(", 300) + "1" + strings.Repeat(")", 300), 1},
		{strings.Repeat("1+", 500) + "1", 501},
	}
	for _, tt := range tests {
		got, err := evaluate(tt.formula)
		if err != nil {
			t.Errorf("evaluate(%q): %v", tt.formula, err)
			continue
		}
		if math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("evaluate(%q) = %v, want %v", tt.formula, got, tt.want)
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	tests := []struct {
		formula string
		wantPos int
		wantMsg string
	}{
		{"(2+", 4, "unexpected end of formula"},
		{"(2+6", 5, "missing ')' to close the '(' at position 1"},
		{"2**3", 3, "expected a number or '(' but found '*'"},
		{"", 0, "empty formula"},
		{"   ", 0, "empty formula"},
		{strings.Repeat("1+", 512) + "1", 0, "formula is 1025 bytes long, the limit is 1024"},
		{"1/0", 2, "division by zero"},
		{"1/(2-2)", 2, "division by zero"},
		{"0^-1", 2, "division by zero"},
		{"5/0.0", 2, "division by zero"},
		{"2+", 3, "unexpected end of formula"},
		{"2)", 2, "unmatched ')'"},
		{"(2+6))", 6, "unmatched ')'"},
		{"()", 2, "expected a number or '(' but found ')'"},
		{"2 3", 3, "expected an operator but found '3'"},
		{"2(3)", 2, "expected an operator but found '('"},
		{"1.2.3", 4, "expected an operator but found '.'"},
		{"1.", 3, "expected a digit after the decimal point"},
		{"abc", 1, "expected a number or '(' but found 'a'"},
		{"2x", 2, "expected an operator but found 'x'"},
		{"+3", 1, "expected a number or '(' but found '+'"},
		{"é+1", 1, "found 'é'"},
		{"1+é", 3, "found 'é'"},
		{"(-8)^0.5", 5, "-8^0.5 is not a real number"},
		{"10^400", 3, "result is too large"},
		{"1e5", 2, "expected an operator but found 'e'"},
		{strings.Repeat("9", 400), 1, "out of range"},
		{"1e308", 2, "found 'e'"},
		{"99^99*99^99", 0, "result is too large"},
	}
	for _, tt := range tests {
		_, err := evaluate(tt.formula)
		var fe *FormulaError
		if !errors.As(err, &fe) {
			t.Errorf("evaluate(%q) error = %v, want a *FormulaError", tt.formula, err)
			continue
		}
		if fe.Pos != tt.wantPos || !strings.Contains(fe.Msg, tt.wantMsg) {
			t.Errorf("evaluate(%q) = %q at %d, want %q at %d", tt.formula, fe.Msg, fe.Pos, tt.wantMsg, tt.wantPos)
		}
	}
}

func TestFormulaErrorMessage(t *testing.T) {
	if got := (&FormulaError{Pos: 3, Msg: "boom"}).Error(); got != "at position 3: boom" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&FormulaError{Msg: "empty formula"}).Error(); got != "empty formula" {
		t.Errorf("Error() = %q", got)
	}
}

func FuzzEvaluate(f *testing.F) {
	for _, s := range []string{"(2+6)*3", "2**3", "(2+", "-2^-2", "1/0", ".5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := evaluate(s) // must not panic
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Errorf("evaluate(%q) = %v without error", s, v)
		}
	})
}
