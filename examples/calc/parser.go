package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxFormulaBytes is the longest formula evaluate accepts.
const maxFormulaBytes = 1024

// FormulaError says what is wrong with a formula and where.
type FormulaError struct {
	// Pos is the 1-based character position of the problem, or 0 when the
	// problem is the formula as a whole.
	Pos int
	Msg string
}

// Error returns the message with its position, "at position 3: ...".
func (e *FormulaError) Error() string {
	if e.Pos > 0 {
		return fmt.Sprintf("at position %d: %s", e.Pos, e.Msg)
	}
	return e.Msg
}

// evaluate computes a formula of decimal numbers, + - * / ^ (power,
// right-associative and binding tighter than unary minus), unary minus and
// parentheses:
//
//	expr    = term { ("+" | "-") term }
//	term    = unary { ("*" | "/") unary }
//	unary   = "-" unary | power
//	power   = primary [ "^" unary ]
//	primary = number | "(" expr ")"
//	number  = digits [ "." digits ] | "." digits
//
// Spaces are allowed between tokens. Errors are *FormulaError.
func evaluate(formula string) (float64, error) {
	if len(formula) > maxFormulaBytes {
		return 0, &FormulaError{Msg: fmt.Sprintf("formula is %d bytes long, the limit is %d", len(formula), maxFormulaBytes)}
	}
	if strings.TrimSpace(formula) == "" {
		return 0, &FormulaError{Msg: "empty formula"}
	}
	p := &parser{src: formula}
	v, err := p.expr()
	if err != nil {
		return 0, err
	}
	if c, ok := p.peek(); ok {
		if c == ')' {
			return 0, p.errorf(p.pos, "unmatched ')'")
		}
		return 0, p.errorf(p.pos, "expected an operator but found %q", c)
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		// NaN here can only come from infinities, as in 1e308*10-1e308*10.
		return 0, &FormulaError{Msg: "result is too large"}
	}
	return v, nil
}

// parser is a recursive-descent parser that evaluates as it goes.
type parser struct {
	src string
	pos int // byte offset of the next unread character
}

func (p *parser) expr() (float64, error) {
	v, err := p.term()
	if err != nil {
		return 0, err
	}
	for {
		c, _ := p.peek()
		if c != '+' && c != '-' {
			return v, nil
		}
		p.pos++
		rhs, err := p.term()
		if err != nil {
			return 0, err
		}
		if c == '+' {
			v += rhs
		} else {
			v -= rhs
		}
	}
}

func (p *parser) term() (float64, error) {
	v, err := p.unary()
	if err != nil {
		return 0, err
	}
	for {
		c, _ := p.peek()
		if c != '*' && c != '/' {
			return v, nil
		}
		opPos := p.pos
		p.pos++
		rhs, err := p.unary()
		if err != nil {
			return 0, err
		}
		if c == '*' {
			v *= rhs
			continue
		}
		if rhs == 0 {
			return 0, p.errorf(opPos, "division by zero")
		}
		v /= rhs
	}
}

func (p *parser) unary() (float64, error) {
	if c, _ := p.peek(); c == '-' {
		p.pos++
		v, err := p.unary()
		return -v, err
	}
	return p.power()
}

func (p *parser) power() (float64, error) {
	base, err := p.primary()
	if err != nil {
		return 0, err
	}
	if c, _ := p.peek(); c != '^' {
		return base, nil
	}
	opPos := p.pos
	p.pos++
	exp, err := p.unary()
	if err != nil {
		return 0, err
	}
	v := math.Pow(base, exp)
	switch {
	case math.IsNaN(v):
		return 0, p.errorf(opPos, "%s^%s is not a real number", fmtNum(base), fmtNum(exp))
	case math.IsInf(v, 0) && base == 0:
		return 0, p.errorf(opPos, "division by zero (0 to a negative power)")
	case math.IsInf(v, 0):
		return 0, p.errorf(opPos, "result is too large")
	}
	return v, nil
}

func (p *parser) primary() (float64, error) {
	c, ok := p.peek()
	switch {
	case !ok:
		return 0, p.errorf(p.pos, "unexpected end of formula, expected a number or '('")
	case c == '(':
		open := p.pos
		p.pos++
		v, err := p.expr()
		if err != nil {
			return 0, err
		}
		c, ok := p.peek()
		if !ok {
			return 0, p.errorf(p.pos, "missing ')' to close the '(' at position %d", p.charPos(open))
		}
		if c != ')' {
			return 0, p.errorf(p.pos, "expected ')' but found %q", c)
		}
		p.pos++
		return v, nil
	case c == '.' || isDigit(c):
		return p.number()
	}
	return 0, p.errorf(p.pos, "expected a number or '(' but found %q", c)
}

func (p *parser) number() (float64, error) {
	start := p.pos
	p.digits()
	if p.pos < len(p.src) && p.src[p.pos] == '.' {
		p.pos++
		if p.digits() == 0 {
			return 0, p.errorf(p.pos, "expected a digit after the decimal point")
		}
	}
	v, err := strconv.ParseFloat(p.src[start:p.pos], 64)
	if err != nil {
		return 0, p.errorf(start, "number %q is out of range", p.src[start:p.pos])
	}
	return v, nil
}

// digits consumes decimal digits and returns how many.
func (p *parser) digits() int {
	start := p.pos
	for p.pos < len(p.src) && isDigit(rune(p.src[p.pos])) {
		p.pos++
	}
	return p.pos - start
}

// peek skips spaces and returns the next character without consuming it;
// ok is false at the end of the formula.
func (p *parser) peek() (c rune, ok bool) {
	for p.pos < len(p.src) {
		c, _ := utf8.DecodeRuneInString(p.src[p.pos:])
		if c != ' ' && c != '\t' {
			return c, true
		}
		p.pos++
	}
	return 0, false
}

func (p *parser) errorf(bytePos int, format string, args ...any) *FormulaError {
	return &FormulaError{Pos: p.charPos(bytePos), Msg: fmt.Sprintf(format, args...)}
}

// charPos turns a byte offset into a 1-based character position.
func (p *parser) charPos(bytePos int) int {
	return utf8.RuneCountInString(p.src[:bytePos]) + 1
}

func isDigit(c rune) bool { return c >= '0' && c <= '9' }

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
