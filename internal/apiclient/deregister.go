package apiclient

import (
	"context"
	"net/http"
	"net/url"
)

// DeregisterNode removes one instance that node owns: the node's agent
// removing its own instance. The server refuses (409) to remove an
// instance of a node for anyone else unless forced.
func (c *Client) DeregisterNode(ctx context.Context, node, id string) (WriteResponse, error) {
	var out WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), url.Values{"node": {node}}, nil, &out)
	return out, err
}

// DeregisterForce removes one instance even when it belongs to an
// agent's node, which registers it again at its next sync unless its
// container is gone.
func (c *Client) DeregisterForce(ctx context.Context, id string) (WriteResponse, error) {
	var out WriteResponse
	_, err := c.do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), url.Values{"force": {"true"}}, nil, &out)
	return out, err
}
