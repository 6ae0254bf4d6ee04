// Package servicetest holds the test helpers that the example services'
// tests share.
package servicetest

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// Get sends GET url with client, with basic auth as username:password
// unless username is empty, and returns the status, the body decoded as a
// JSON object, and the headers of the answer. It fails the test when the
// request fails or the body is not JSON.
func Get(t testing.TB, client *http.Client, url, username, password string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if username != "" {
		req.SetBasicAuth(username, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("GET %s: %d, body %q is not JSON: %v", url, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, body, resp.Header
}
