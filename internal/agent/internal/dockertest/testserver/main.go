// Command testserver is the tiny server the agent's Docker tests run in
// their own FROM-scratch image: it listens on the ports PORTS names
// ("8081,8082,5353/udp"), answers HTTP on tcp ports and echoes on udp
// ports, and exits at once on SIGTERM (as PID 1 it would otherwise
// ignore it). SIGHUP is ignored.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
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
