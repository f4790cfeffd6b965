# Pinned component versions for the single-node e2e cluster.
# Kubernetes must stay below 1.38: these VMs are cgroup v1 only (1.35+ needs failCgroupV1: false).
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
# CONTAINERD_VERSION=debian uses Debian's containerd 1.6 package instead; only when asked
# for: a failed 2.x build fails `cluster up`.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
# The snapshot CRDs (VolumeSnapshot*, VolumeGroupSnapshot*): config/crd of this version of the Go
# module github.com/kubernetes-csi/external-snapshotter/client/v8 (its newest at the time of pinning);
# the common snapshot-controller: cmd/snapshot-controller of github.com/kubernetes-csi/external-snapshotter/v8
# at the same version.
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.7.0}"
# promtool (deploy/monitoring's alert rules are checked with it): cmd/promtool of the Go module
# github.com/prometheus/prometheus, whose v0.3xx.y tags are Prometheus v3.xx.y.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# helm (deploy/helm/tscsi is linted, rendered and compared with kustomize's output with it):
# cmd/helm of the Go module helm.sh/helm/v4.
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
# Where built binaries are cached, one directory per component and version.
TSCSI_CLUSTER_CACHE="${TSCSI_CLUSTER_CACHE:-/var/cache/tscsi-cluster}"
K8S_BIN="$TSCSI_CLUSTER_CACHE/kubernetes-$K8S_VERSION"
ETCD_BIN="$TSCSI_CLUSTER_CACHE/etcd-$ETCD_VERSION"
# kubectl of the cluster's own version (built like the cluster, from k8s.io/kubernetes): the
# tests and scripts use this one, never whatever kubectl a machine happens to have.
KUBECTL_BIN="$TSCSI_CLUSTER_CACHE/kubectl-$K8S_VERSION"
if [ "$CONTAINERD_VERSION" = debian ]; then CONTAINERD_BIN=/usr/bin
else CONTAINERD_BIN="$TSCSI_CLUSTER_CACHE/containerd-$CONTAINERD_VERSION"; fi
SNAPSHOT_CRDS_DIR="$TSCSI_CLUSTER_CACHE/snapshot-crds-$SNAPSHOTTER_VERSION"
SNAPSHOT_CONTROLLER_BIN="$TSCSI_CLUSTER_CACHE/snapshot-controller-$SNAPSHOTTER_VERSION"
# promtool is a test tool, not a cluster binary: its own cache (and lock) beside the cluster's.
TSCSI_TOOLS_CACHE="${TSCSI_TOOLS_CACHE:-/var/cache/tscsi-tools}"
PROMTOOL_BIN="$TSCSI_TOOLS_CACHE/promtool-$PROMETHEUS_VERSION"
HELM_BIN="$TSCSI_TOOLS_CACHE/helm-$HELM_VERSION"
# Kubernetes' e2e suite (e2e.test) of the cluster's version, for the external storage tests, and
# its agnhost: test tools too (an e2e.test build holds its cache's lock for a long while).
E2E_TEST_BIN="$TSCSI_TOOLS_CACHE/e2e-test-$K8S_VERSION"
AGNHOST_BIN="$TSCSI_TOOLS_CACHE/agnhost-$K8S_VERSION"
