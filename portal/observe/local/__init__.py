"""The `local` region runtime: one machine, where the control plane runs each replica's rendered engine
argv (or the engine simulator in its place) as a supervised process and observes it as a kubelet
would: a free port and a process group per replica, restarts with back-off, readiness by the engine's
own health endpoint, logs kept per replica, processes adopted (never started twice) across portal
restarts. See docs/ops-guide.md ("Local regions")."""
