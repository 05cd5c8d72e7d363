"""Simplify: what can safely be removed. Suggestions, not violations.

Every rule here is off unless a policy sets ``rules.simplify.enabled: true``; ``guywire report``
always lists them. Each one raises only when the manifests show enough to be sure: when guywire
cannot see what it would need (a ConfigMap's contents, a Secret, pods made by a controller it does
not read), it says nothing.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterator

from ..graph.dependency_graph import Edge, WKey, env_hosts, index_get, service_hosts, wlabel
from ..model.severity import Severity
from ..model.units import format_duration
from ..views.workload import Service, Workload
from .base import Context, Issue, rule

if TYPE_CHECKING:
    from ..model.policy import SimplifyRules

#: A command-line value or env value that names a configuration file: the file may name anything.
CONFIG_FILE = re.compile(r"\.(ya?ml|json|toml|conf|cfg|ini|properties|env|hcl|xml)$", re.I)
#: Pod labels set by controllers from names guywire cannot predict (a pod's name, a CronJob run, a revision).
CONTROLLER_KEYS = frozenset({
    "controller-uid", "batch.kubernetes.io/controller-uid", "pod-template-hash", "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index", "batch.kubernetes.io/job-completion-index",
    "job-name", "batch.kubernetes.io/job-name",
})
#: Labels a release tool sets on what it installs: pods selected by them come from a release.
RELEASE_KEYS = frozenset({"app.kubernetes.io/instance", "release", "app.kubernetes.io/managed-by", "helm.sh/chart",
                          "heritage", "chart"})
#: Images whose only job is to pass requests on.
PROXY_IMAGES = frozenset({"envoy", "nginx", "nginx-unprivileged", "openresty", "haproxy", "traefik", "caddy", "socat",
                          "tinyproxy", "squid", "pgbouncer"})
PROXY_COMPONENTS = frozenset({"proxy", "forwarder", "relay"})
SIDE_PORT = re.compile(r"(^|-)(metrics|health|healthz|admin|probe|status|debug|prometheus)($|-)", re.I)


def _retry_text(e: Edge) -> str:
    r = e.retry
    parts = [f"{r.attempts} attempts" if r.attempts > 1 else "no retry"]
    if r.per_try_timeout is not None:
        parts.append(f"{format_duration(r.per_try_timeout)} per try")
    if r.timeout is not None:
        parts.append(f"{format_duration(r.timeout)} timeout")
    return ", ".join(parts)


# ----- GW-SMP-001 --------------------------------------------------------------------------------
def _visible_text(w: Workload) -> tuple[list[str], list[str], bool]:
    """(env names as kebab words, env values + arguments, whether some configuration is out of sight)."""
    names, values, hidden = [], [], False
    for t in w.templates:
        if t.config_volumes:
            hidden = True
        for c in t.containers:
            if c.config_refs:
                hidden = True
            for k, v in c.env:
                names.append(k.lower().replace("_", "-"))
                values.append(v.lower())
            values += [a.lower() for a in c.args]
    if any(CONFIG_FILE.search(v.strip().strip("\"'")) for v in values):
        hidden = True  # a configuration file baked into the image may name the dependency
    return names, values, hidden


def _named(candidates: set[str], names: list[str], values: list[str]) -> bool:
    for n in candidates:
        word = re.compile(r"(?<![a-z0-9-])" + re.escape(n) + r"(?![a-z0-9])")
        if any(n in env for env in names) or any(word.search(v) for v in values):
            return True
    return False


def _candidates(e: Edge) -> set[str]:
    out = {e.dep.name}
    if e.service:
        out.add(e.service[1])
    out.update(t[2] for t in e.targets)
    return {n.lower() for n in out if n}


def _env_targets(w: Workload, ctx: Context) -> set[WKey]:
    """Workloads that the Services the workload's env values name lead to."""
    out: set[WKey] = set()
    for t in w.templates:
        for c in t.containers:
            for k, v in c.env:
                for host, _ in env_hosts(k, v):
                    skey = service_hosts(host, w.namespace)
                    if skey is not None:
                        out.update(ctx.graph.backends.get(skey, ()))
    return out


@rule(id="GW-SMP-001", name="stale-dependency", severity=Severity.LOW, section="simplify", switch="enabled",
      summary="A declared dependency that nothing in the workload names any more.",
      remediation="If the workload no longer calls it, remove the dependency from guywire.dev/depends-on; if it "
                  "does, pass its address in the environment so the graph and the people reading it see the call.")
def stale_dependency(w: Workload, params: SimplifyRules, ctx: Context) -> Iterator[Issue]:
    """An entry in `guywire.dev/depends-on` outlives the code that made the call: the graph then
    shows a dependency that is not there, with retries, depth and blast radius that are not real.

    The rule is precise rather than thorough. It raises only when all of these hold:

    * the dependency is declared, in the cluster, and resolves to a workload;
    * the workload's containers (init containers too) show where their addresses come from: they
      have environment variables or arguments, and those name at least one of its *other*
      dependencies — a workload whose addresses are compiled in, or that names none of its
      dependencies, could name this one the same way;
    * nothing is out of sight: no ConfigMap or Secret read through `envFrom`, `valueFrom` or a
      volume (guywire does not read their contents), no CSI secrets store, no argument or value that
      is a configuration file (`*.yaml`, `*.conf`, ...);
    * no env variable name, env value, command or argument names it — its name, its Service's
      name, or the name of a workload behind it (`VECTOR_DB_URL`, `http://vector-db.data:6333`,
      `--retriever=retriever:8080`) — and no env value names another Service with the same backends;
    * no caller path needs it: no workload that calls this one, directly or through others, names
      it either (a router that forwards to whatever its callers name would otherwise look stale)."""
    names, values, hidden = _visible_text(w)
    if hidden or not (names or values):
        return
    g = ctx.graph
    edges = [e for e in g.out.get(w.key, ()) if not e.external and e.resolved]
    env_targets: set[WKey] | None = None
    named = {id(e): _named(_candidates(e), names, values) for e in edges}
    for e in edges:
        if not e.declared or not e.targets or named[id(e)]:
            continue
        others = [o for o in edges if o is not e and named[id(o)]]
        if not others:
            continue  # it names none of its other dependencies either: addresses come from elsewhere
        if env_targets is None:
            env_targets = _env_targets(w, ctx)
        if env_targets & set(e.targets):
            continue  # reached through another Service with the same backends
        cands = _candidates(e)
        callers_name_it = False
        for a in sorted(g.ancestors({w.key}) - {w.key}):
            aw = ctx.inventory.workloads.get(a)
            if aw is None:
                continue
            an, av, _ = _visible_text(aw)
            if _named(cands, an, av):
                callers_name_it = True
                break
        if callers_name_it:
            continue
        label = e.label
        shown = ", ".join(o.label for o in others[:3])
        yield Issue(f'declares a dependency on "{e.dep.raw}" ({label}), but no env variable, command or argument '
                    f"names it, while they do name its other dependencies ({shown}), and no caller names it. "
                    f"If it no longer calls {label}, remove \"{e.dep.raw}\" from guywire.dev/depends-on.",
                    path=[wlabel(w.key), label])


# ----- GW-SMP-002 --------------------------------------------------------------------------------
def _same_cycle(ctx: Context, a: WKey, b: WKey) -> bool:
    if a == b:
        return True
    x, y = ctx.graph.analysis.get(a), ctx.graph.analysis.get(b)
    return bool(x and y and x.scc == y.scc and x.scc in ctx.graph.sccs)


def retry_run(ctx: Context, start: WKey) -> tuple[int, list[tuple[str, int]]]:
    """The chain of consecutive retried hops from ``start`` with the most calls at its end:
    (calls, [(start label, 1), (next label, attempts on the hop into it), ...]). Edges inside a cycle
    are not followed. Iterative, with a memo, so a long chain cannot exhaust the stack."""
    g = ctx.graph
    memo: dict[WKey, tuple[int, list[tuple[str, int]]]] = {}
    stack: list[tuple[WKey, bool]] = [(start, False)]
    on_path: set[WKey] = set()
    while stack:
        node, ready = stack.pop()
        if node in memo:
            continue
        hops = [(e, t) for e in g.out.get(node, ()) if e.retry.attempts > 1
                for t in (e.targets or (None,)) if t is None or (not _same_cycle(ctx, node, t) and t not in on_path)]
        if not ready:
            on_path.add(node)
            stack.append((node, True))
            stack.extend((t, False) for _, t in hops if t is not None and t not in memo)
            continue
        on_path.discard(node)
        best: tuple[int, list[tuple[str, int]]] = (1, [(wlabel(node), 1)])
        for e, t in hops:
            tail = memo.get(t, (1, [(wlabel(t), 1)])) if t is not None else (1, [(e.label, 1)])
            calls = e.retry.attempts * tail[0]
            path = [(wlabel(node), 1), (tail[1][0][0], e.retry.attempts), *tail[1][1:]]
            if calls > best[0] or (calls == best[0] and len(path) > len(best[1])):
                best = (calls, path)
        memo[node] = best
    return memo[start]


@rule(id="GW-SMP-002", name="retries-at-several-layers", severity=Severity.LOW, section="simplify",
      switch="enabled",
      summary="The same call is retried at two or more consecutive layers of one path.",
      remediation="Keep retries in one place (usually the outermost layer) and set attempts=1 on the layers "
                  "below it, each with a timeout.")
def retries_at_several_layers(w: Workload, params: SimplifyRules, ctx: Context) -> Iterator[Issue]:
    """When A retries B and B retries C, one failure of C is retried by B, and then B's whole
    retry sequence is retried by A: the attempts multiply (3 x 3 = 9 calls to C) and the latency
    of giving up adds up, for no better chance of success than retrying once, in one place.

    The rule follows the chains of hops that all retry (attempts > 1), from a workload that no
    caller retries into, and reports the chain with the most calls at its end, with the calls that
    retrying at one layer only would save (the largest single-hop attempts stay). Hops inside a
    dependency cycle are not followed (GW-DEP-004 reports the cycle). GW-RTY-002 reports
    amplification above a limit; this rule reports any retry that is repeated, whatever the total."""
    g = ctx.graph
    if not any(e.retry.attempts > 1 for e in g.out.get(w.key, ())):
        return
    for c in g.callers.get(w.key, ()):
        if _same_cycle(ctx, c, w.key):
            continue
        if any(e.retry.attempts > 1 and w.key in e.targets for e in g.out.get(c, ())):
            return  # a caller retries into this workload: the chain is reported from there
    calls, path = retry_run(ctx, w.key)
    layers = len(path) - 1
    if layers < 2:
        return
    keep = max(n for _, n in path[1:])
    text = path[0][0] + "".join(f" -({n}x)-> {name}" for name, n in path[1:])
    yield Issue(f"retries the same call at {layers} consecutive layers: {text}, so one request can send {calls} "
                f"calls to {path[-1][0]}. Retrying at one layer only ({keep} attempts) sends at most {keep}: "
                f"{calls - keep} calls fewer ({calls / keep:.3g}x less load when it fails).",
                path=[name for name, _ in path])


# ----- GW-SMP-003 --------------------------------------------------------------------------------
@rule(id="GW-SMP-003", name="service-without-workload", severity=Severity.LOW, section="simplify",
      switch="enabled", target="service",
      summary="A Service whose selector matches no workload.",
      remediation="Delete the Service if nothing uses it, or fix its selector so it matches the pod labels of "
                  "the workload it fronts.")
def service_without_workload(svc: Service, params: SimplifyRules, ctx: Context) -> Iterator[Issue]:
    """A Service that selects no pods has no endpoints: calls to it fail, and it is one more name
    in the cluster that looks like a dependency. Usually it outlived its workload, or its selector
    no longer matches the workload's pod labels after a rename.

    This rule is judged on Services (target "service"), not on workloads, because the thing to
    remove or fix is the Service and no workload is involved. It says nothing when the pods could
    come from somewhere guywire does not see: a Service without a selector (its endpoints are
    managed by hand), an ExternalName Service, a Service made by a controller (ownerReferences, or
    one of the AI kinds' own Services), a selector on labels that controllers derive from names
    guywire cannot predict (`statefulset.kubernetes.io/pod-name`, `controller-uid`,
    `pod-template-hash`, the `job-name` of a CronJob's run, ...), and a selector on a release's
    labels (`app.kubernetes.io/instance`, `release`, ...) that no workload among the inputs carries,
    since that release's workloads are then not among the inputs. Pods made by an operator guywire
    does not read (for example an Argo Rollout) also look like no workload; exempt such a Service,
    or read the suggestion with that in mind."""
    if not svc.selector or svc.external_name or svc.backend is not None or svc.owner is not None:
        return
    g = ctx.graph
    if g.backends.get(svc.key):
        return
    if any(k in CONTROLLER_KEYS for k in svc.selector):
        return
    for k, v in svc.selector.items():
        if k in RELEASE_KEYS and not index_get(g.label_index, (svc.namespace, k, v)):
            return
    sel = ", ".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
    callers = sorted(g.refs.get(svc.key, ()))
    used = ""
    if callers:
        shown = ", ".join(wlabel(c) for c in callers[:3]) + (", …" if len(callers) > 3 else "")
        used = f" {len(callers)} workload(s) call it ({shown}), and those calls go nowhere."
    yield Issue(f"selects no workload: no pod template among the inputs in namespace {svc.namespace} has "
                f"{sel}.{used} Delete the Service if nothing uses it, or fix its selector.")


# ----- GW-SMP-004 --------------------------------------------------------------------------------
def _image_name(image: str) -> str:
    base = image.split("@")[0]
    last = base.rsplit("/", 1)[-1]
    return last.split(":")[0].lower()


@rule(id="GW-SMP-004", name="pass-through-hop", severity=Severity.LOW, section="simplify", switch="enabled",
      summary="A workload that only forwards: one caller, one callee, one port, a proxy image.",
      remediation="Let the caller call the callee directly (or move the proxying into the caller's sidecar), and "
                  "keep one set of retries and timeouts.")
def pass_through_hop(w: Workload, params: SimplifyRules, ctx: Context) -> Iterator[Issue]:
    """A hop that only passes requests on adds latency, a failure mode, a deploy and its own
    retries and timeouts that have to agree with those on either side (GW-RTY-004), and gives
    nothing back.

    Structure alone cannot tell a forwarder from a service that does work between two calls (a
    retriever that embeds, a reranker), so the rule wants both: the shape — exactly one caller and
    one in-cluster callee (not the caller), one main container, at most one serving port (ports named
    metrics, health, admin and the like do not count), one pod template, long-running, no GPU, not a
    StatefulSet, and not exposed outside the cluster by a LoadBalancer or NodePort Service — and
    the evidence that forwarding is all it does: a proxy image (Envoy, NGINX, HAProxy, Traefik,
    Caddy, socat, ...) or the label `app.kubernetes.io/component` set to proxy, forwarder or relay."""
    if w.batch or w.requests_gpu or w.kind == "StatefulSet" or len(w.templates) != 1:
        return
    g = ctx.graph
    callers = set(g.callers.get(w.key, ())) - {w.key}
    edges = g.out.get(w.key, ())
    if len(callers) != 1 or len(edges) != 1:
        return
    (caller,), e = tuple(callers), edges[0]
    if e.external or not e.targets or w.key in e.targets or caller in e.targets:
        return
    mains = [c for c in w.templates[0].containers if not c.init]
    if len(mains) != 1:
        return
    serving = [p for p in mains[0].ports if not SIDE_PORT.search(p.name or "")]
    if len(serving) > 1:
        return
    for skey in g.selected_by.get(w.key, ()):
        svc = ctx.inventory.services.get(skey)
        if svc is not None and svc.type in ("LoadBalancer", "NodePort"):
            return
    image = _image_name(mains[0].image)
    component = (w.labels.get("app.kubernetes.io/component") or
                 w.templates[0].labels.get("app.kubernetes.io/component") or "").lower()
    if image not in PROXY_IMAGES and component not in PROXY_COMPONENTS:
        return
    why = f"image {image}" if image in PROXY_IMAGES else f"app.kubernetes.io/component={component}"
    callee = e.label
    yield Issue(f"only forwards: one caller ({wlabel(caller)}), one callee ({callee}), one port, {why}. It adds a "
                f"hop with its own retry policy ({_retry_text(e)}) between them. Let {wlabel(caller)} call "
                f"{callee} directly.", path=[wlabel(caller), wlabel(w.key), callee])
