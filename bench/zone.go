package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// zoneName is signpost's default zone, served by every server under test.
const zoneName = "servicediscovery.internal"

// answerTTL matches signpost's default --ttl.
const answerTTL = 5

// instance is one registration of the benchmark data set.
type instance struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Address string `json:"address"`
	Port    int    `json:"port"`
}

// dataset returns services × per instances: service svcN (N from 1) with
// instances iN-0.., addresses in 10.0.0.0/8 (records only: nothing is ever
// sent to them).
func dataset(services, per int) []instance {
	out := make([]instance, 0, services*per)
	for n := 1; n <= services; n++ {
		for j := 0; j < per; j++ {
			k := (n-1)*per + j + 1
			out = append(out, instance{
				ID:      fmt.Sprintf("i%d-%d", n, j),
				Service: fmt.Sprintf("svc%d", n),
				Address: fmt.Sprintf("10.%d.%d.%d", (k>>16)&255, (k>>8)&255, k&255),
				Port:    8000 + j,
			})
		}
	}
	return out
}

// writeZone writes a zone file holding what signpost answers for data:
// svcN SRV and A, _svcN._tcp SRV, and each SRV target's A record, with
// signpost's SOA and NS.
func writeZone(path string, data []instance) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("zone file %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "$ORIGIN %s.\n$TTL %d\n", zoneName, answerTTL)
	fmt.Fprintf(w, "@ IN SOA ns.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 %[2]d\n", zoneName, answerTTL)
	fmt.Fprintf(w, "@ IN NS ns.%s.\n", zoneName)
	fmt.Fprintf(w, "ns IN A 127.0.0.1\n")
	for _, in := range data {
		target := fmt.Sprintf("%s.%s.%s.", in.ID, in.Service, zoneName)
		fmt.Fprintf(w, "%s IN SRV 0 1 %d %s\n", in.Service, in.Port, target)
		fmt.Fprintf(w, "_%s._tcp IN SRV 0 1 %d %s\n", in.Service, in.Port, target)
		fmt.Fprintf(w, "%s IN A %s\n", in.Service, in.Address)
		fmt.Fprintf(w, "%s IN A %s\n", target, in.Address)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("zone file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("zone file %s: %w", path, err)
	}
	return nil
}

// writeQueries writes a dnsperf query file of n lines over services
// svc1..svcS: 50% svcN SRV, 30% svcN A, 20% _svcN._tcp SRV, the services
// spread evenly in a fixed pseudo-random order.
func writeQueries(path string, services, n int) error {
	var b strings.Builder
	x := uint32(2463534242)
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		svc := int(x%uint32(services)) + 1
		switch k := i % 10; {
		case k < 5:
			fmt.Fprintf(&b, "svc%d.%s SRV\n", svc, zoneName)
		case k < 8:
			fmt.Fprintf(&b, "svc%d.%s A\n", svc, zoneName)
		default:
			fmt.Fprintf(&b, "_svc%d._tcp.%s SRV\n", svc, zoneName)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("query file %s: %w", path, err)
	}
	return nil
}
