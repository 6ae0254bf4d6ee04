// Command testserver is the tiny server the agent's Docker tests run in
// their own FROM-scratch image: it listens on the ports PORTS names
// ("8081,8082,5353/udp"), answers HTTP on tcp ports and echoes on udp
// ports, and exits at once on SIGTERM (as PID 1 it would otherwise
// ignore it). SIGHUP is ignored.
//
// Health: GET /health answers 200, or 503 while failing; GET /fail starts
// failing and GET /recover stops (HEALTH=fail starts failing). Run as
// "/web -healthcheck" it is a Docker HEALTHCHECK: it GETs /health on the
// first tcp port of PORTS and exits 0 on a 2xx, 1 otherwise.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var failing atomic.Bool

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-healthcheck" {
		os.Exit(healthcheck())
	}
	failing.Store(os.Getenv("HEALTH") == "fail")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP) // a reload signal: the tests check it leaves the container registered
	host, _ := os.Hostname()
	for _, p := range strings.Split(os.Getenv("PORTS"), ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		port, proto, _ := strings.Cut(p, "/")
		switch proto {
		case "", "tcp":
			l, err := net.Listen("tcp", ":"+port)
			if err != nil {
				log.Fatal(err)
			}
			go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/fail":
					failing.Store(true)
				case "/recover":
					failing.Store(false)
				case "/health":
					if failing.Load() {
						http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
						return
					}
				}
				fmt.Fprintf(w, "ok %s %s\n", host, port)
			}))
		case "udp":
			pc, err := net.ListenPacket("udp", ":"+port)
			if err != nil {
				log.Fatal(err)
			}
			go func() {
				buf := make([]byte, 1500)
				for {
					n, addr, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], addr)
				}
			}()
		default:
			log.Fatalf("PORTS: %q: want port or port/udp", p)
		}
	}
	<-sig
}

// healthcheck GETs /health on the first tcp port of PORTS.
func healthcheck() int {
	for _, p := range strings.Split(os.Getenv("PORTS"), ",") {
		port, proto, _ := strings.Cut(strings.TrimSpace(p), "/")
		if port == "" || (proto != "" && proto != "tcp") {
			continue
		}
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://127.0.0.1:" + port + "/health")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		resp.Body.Close()
		fmt.Println("health:", resp.Status)
		if resp.StatusCode/100 != 2 {
			return 1
		}
		return 0
	}
	fmt.Println("no tcp port in PORTS")
	return 1
}
