// Command probe is the plain program the container test runs in a FROM
// scratch image: it knows nothing of signpost and uses only the system
// resolver (Go's own, reading the /etc/resolv.conf Docker gives the
// container).
//
//	probe serve PORT        answer HTTP on PORT with "hello from HOSTNAME"
//	probe get NAME [PORT]   print NAME's addresses (getaddrinfo-like), then
//	                        the body of GET http://NAME:PORT/
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: probe serve PORT | probe get NAME [PORT]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "get":
		port := ""
		if len(os.Args) > 3 {
			port = os.Args[3]
		}
		if err := get(os.Args[2], port); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}

func serve(port string) {
	host, _ := os.Hostname()
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", host)
		}))
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func get(name, port string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	sort.Strings(addrs)
	fmt.Println("addresses:", strings.Join(addrs, " "))
	if port == "" {
		return nil
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(name, port) + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	fmt.Printf("body: %s", body)
	return nil
}
