package main

import (
	"context"
	"errors"
	"io"

	"github.com/signpost-dns/signpost/internal/agent"
	"github.com/signpost-dns/signpost/internal/buildinfo"
	"github.com/signpost-dns/signpost/internal/server"
)

func init() {
	commands["up"] = command{"run a server (embedded store) and an agent in one process: one host, one command", runUp}
}

// runUp is the command a newcomer runs first: the server on the embedded
// store and an agent for this host's Docker, writing to it over loopback.
func runUp(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("up", "[flags]")
	mkCfg := serverFlags(fs)
	opts := agentFlags(fs)
	log, err := parseLogged(fs, args)
	if err != nil {
		return err
	}
	scfg, err := mkCfg()
	if err != nil {
		return err
	}
	scfg.Log = log
	acfg, err := opts.config(log.With("component", "agent"))
	if err != nil {
		return err
	}
	acfg.WithServer = true
	token := ""
	if scfg.TokenFile != "" {
		if token, err = server.ReadToken(scfg.TokenFile); err != nil {
			return err
		}
	}
	// /healthz also says whether the agent does its job (Docker answers).
	var ag *agent.Agent
	scfg.HealthChecks = map[string]func() error{"agent": func() error {
		if ag == nil {
			return nil
		}
		return ag.Health()
	}}
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	if err := buildinfo.Register(srv.Registry()); err != nil {
		return err
	}
	be, err := serverBackend([]string{srv.URL()}, token, acfg.Node, acfg.LeaseTTL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One process, one /metrics: the agent's health metrics join the
	// server's (a --metrics listener, if asked for, serves them too).
	if acfg.Metrics, err = opts.serveMetrics(ctx, log.With("component", "agent")); err != nil {
		return err
	}
	if acfg.Metrics == nil {
		acfg.Metrics = srv.Registry()
	}
	ag, err = agent.New(acfg, be)
	if err != nil {
		return err
	}
	opts.agent.Store(ag)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	agErr := ag.Run(ctx)
	// The agent stops first (it may release its records), then the server.
	cancel()
	srvErr := <-srvDone
	if acfg.DeregisterOnExit {
		log.Info("signpost up stopped: its DNS server and API stopped with it, and this node's records were removed on exit")
	} else {
		log.Info("signpost up stopped: its DNS server and API stopped with it, so nothing answers for the zone now; the records are kept in the data dir for the next signpost up", "data_dir", scfg.DataDir)
	}
	return errors.Join(agErr, srvErr)
}
