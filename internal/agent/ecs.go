package agent

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Labels the Amazon ECS container agent sets on every container of a task.
const (
	LabelECSTaskARN       = "com.amazonaws.ecs.task-arn"
	LabelECSCluster       = "com.amazonaws.ecs.cluster"
	LabelECSContainerName = "com.amazonaws.ecs.container-name"
	LabelECSTaskFamily    = "com.amazonaws.ecs.task-definition-family"
	LabelECSTaskRevision  = "com.amazonaws.ecs.task-definition-version"
)

// ECSPauseContainerName is the com.amazonaws.ecs.container-name of the
// pause container that holds an awsvpc task's network namespace (its ENI).
// The agent never registers it.
const ECSPauseContainerName = "~internal~ecs~pause"

// Metadata keys the agent publishes for a container of an ECS task, from
// the labels above (Config.ECSMetadata).
const (
	MetaECSTaskARN       = "ecs_task_arn"
	MetaECSCluster       = "ecs_cluster"
	MetaECSContainerName = "ecs_container_name"
	MetaECSTaskFamily    = "ecs_task_family"
	MetaECSTaskRevision  = "ecs_task_revision"
)

// ecsMetaLabels maps each ECS label to its metadata key, in the order
// they are added (the task first: it is what people look up).
var ecsMetaLabels = []struct{ label, key string }{
	{LabelECSTaskARN, MetaECSTaskARN},
	{LabelECSTaskFamily, MetaECSTaskFamily},
	{LabelECSTaskRevision, MetaECSTaskRevision},
	{LabelECSCluster, MetaECSCluster},
	{LabelECSContainerName, MetaECSContainerName},
}

// isECSPause reports whether labels are those of an ECS task's pause
// container.
func isECSPause(labels map[string]string) bool {
	return labels[LabelECSContainerName] == ECSPauseContainerName
}

// isECSTask reports whether labels are those of a container ECS started.
func isECSTask(labels map[string]string) bool {
	_, ok := labels[LabelECSTaskARN]
	return ok
}

// withECSMeta returns meta with the container's ECS labels added as
// metadata, and a note for each label left out. A label whose value is
// empty is skipped; one that would break a registry limit (a "key=value"
// longer than one TXT string, 255 bytes; the metadata's 4,096 bytes or 64
// keys in all; a control character) is left out whole, never truncated:
// a cut ARN would look right and name another task. An ECS label wins
// over a SERVICE_* variable that sets the same key. meta itself is not
// changed.
func withECSMeta(c container, meta map[string]string) (map[string]string, []note) {
	if !isECSTask(c.Labels) {
		return meta, nil
	}
	if registry.CheckMeta(meta) != nil {
		return meta, nil // refused for its own metadata; the caller says why
	}
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	var notes []note
	for _, l := range ecsMetaLabels {
		v, ok := c.Labels[l.label]
		if !ok || v == "" {
			continue
		}
		prev, had := out[l.key]
		out[l.key] = v
		if err := registry.CheckMeta(out); err != nil {
			if had {
				out[l.key] = prev
			} else {
				delete(out, l.key)
			}
			notes = append(notes, note{key: "ecs-meta:" + l.key, msg: "ECS label not published as metadata: it breaks a registry limit (left out, not truncated)",
				attrs: []any{"container", c.Name, "label", l.label, "meta", l.key, "bytes", len(l.key) + 1 + len(v), "err", err}})
			continue
		}
		if had && prev != v {
			notes = append(notes, note{key: "ecs-override:" + l.key, msg: "ECS label replaces the container's own metadata of the same key",
				attrs: []any{"container", c.Name, "label", l.label, "meta", l.key}})
		}
	}
	if len(out) == 0 {
		return meta, notes
	}
	return out, notes
}

// ecsHint is the note for a container of an ECS task that shares another
// container's network (awsvpc) while the agent does not ask ECS for the
// task's address.
func ecsHint(c container) note {
	return note{key: "netmode", msg: "container of an ECS awsvpc task: its address is its task's ENI, which Docker does not show; not registered (the agent asks ECS for it with --ecs-introspection)",
		attrs: []any{"container", c.Name, "network_mode", c.NetworkMode, "task", c.Labels[LabelECSTaskARN]}}
}

// ecsPauseNote is said once for each pause container the agent sees.
func ecsPauseNote(c container) note {
	return note{key: "ecs-pause", info: true, msg: "ECS pause container (holds an awsvpc task's network): never registered",
		attrs: []any{"container", c.Name, "task", c.Labels[LabelECSTaskARN]}}
}

// awsvpc fills in the task's address and the ports of a container that
// shares the network of another (NetworkMode container:<id>), when that
// one is an ECS task's pause container, from ECS introspection. false
// when they are not known yet (the endpoint does not answer, or knows no
// address for the task): the container is then not registered at all,
// never with another address; the failure is logged (WARN the first
// time, for the container and the URL) and the loop retries with backoff.
func (a *Agent) awsvpc(ctx context.Context, c container) (container, bool) {
	addr, ports, err := a.ecs.resolve(ctx, a.docker, c)
	switch {
	case errors.Is(err, errNotECSTask):
		return c, true
	case err != nil:
		if ctx.Err() != nil {
			return c, false
		}
		a.ecsWaiting = true
		lvl := slog.LevelDebug
		if !a.ecs.failing[c.ID] {
			a.ecs.failing[c.ID] = true
			lvl = slog.LevelWarn
		}
		a.ecs.setWaiting(err)
		a.log.Log(ctx, lvl, "awsvpc container not registered: its task's address is unknown; retrying later, never registering another address",
			"container", c.Name, "task", c.Labels[LabelECSTaskARN], "url", a.ecs.taskURL(c.ID), "err", err)
		return c, false
	}
	if a.ecs.failing[c.ID] {
		delete(a.ecs.failing, c.ID)
		a.ecs.setWaiting(nil)
		a.log.Info("awsvpc task address found after failed lookups; registering the container",
			"container", c.Name, "task", c.Labels[LabelECSTaskARN], "address", addr.String(), "url", a.ecs.taskURL(c.ID))
	}
	c.TaskAddr = addr
	c.Ports = append(slices.Clone(c.Ports), ports...)
	return c, true
}
