package check

import (
	"context"
	"net/http"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// ServerSource sweeps a signpost server through its API. By default it
// checks only instances registered by hand: agents check their own
// containers and would put back what the sweep removed.
type ServerSource struct {
	Client *apiclient.Client
	// IncludeAgents also sweeps instances that belong to a node.
	IncludeAgents bool
}

// Name implements Source.
func (s *ServerSource) Name() string { return "signpost server" }

// Endpoints implements Source.
func (s *ServerSource) Endpoints(ctx context.Context) ([]Endpoint, error) {
	list, _, err := s.Client.Instances(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]Endpoint, 0, len(list))
	for _, in := range list {
		if in.Node != "" && !s.IncludeAgents {
			continue
		}
		out = append(out, Endpoint{Key: in.ID, Service: in.Service, Target: in.ID + "." + in.Service, Address: in.Address, Port: in.Port})
	}
	return out, nil
}

// Remove implements Source. An instance that is already gone is fine;
// one of an agent's node (--include-agents) is removed all the same.
func (s *ServerSource) Remove(ctx context.Context, ep Endpoint) error {
	if _, err := s.Client.DeregisterForce(ctx, ep.Key); err != nil && !apiclient.IsStatus(err, http.StatusNotFound) {
		return err
	}
	return nil
}
