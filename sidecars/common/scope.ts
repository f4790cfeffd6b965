// Which objects a sidecar serves. Two sets of sidecars run against one driver name: the
// central ones (RBD: volumes every node reaches) and one set per node (loop, LVM: volumes
// that live on that node). Each must act only on objects of the backends its driver
// serves and, on a node, only on that node's volumes; otherwise a central DeleteVolume of a
// node's volume ID answers OK (the ID is unknown there), the PV goes and the volume leaks.
import { createHash } from 'node:crypto';
import type { k8s } from './kube.js';

/** The driver's backend when a StorageClass does not name one (the driver's --default-backend default). */
export const DEFAULT_BACKEND = 'loop';
/** Every backend the driver has; a sidecar without --backends serves them all. */
export const ALL_BACKENDS = ['loop', 'lvm', 'rbd'] as const;

// The driver's volume IDs: vol-<backend>-[<location>-]<32 hex>, derived from the CO's name
// (driver/ids.ts; test/unit/sidecar-scope.test.ts holds the two to the same answer).
const VOLUME_ID_RE = /^vol-([a-z][a-z0-9]{0,15})-(?:[A-Za-z0-9._-]+-)?[0-9a-f]{32}$/;

/**
 * An ID the driver answers for the volume it creates for CreateVolume name `name` on
 * `backend`: the one without a location (the driver may add where the volume lives, which
 * only it knows), which the driver takes for the same volume wherever it is.
 */
export function derivedVolumeId(backend: string, name: string): string {
  return `vol-${backend}-${createHash('sha256').update(`vol\0${backend}\0${name}`).digest('hex').slice(0, 32)}`;
}

/** The backend a volume handle belongs to, or undefined when the handle is not one of the driver's IDs. */
export function backendOfHandle(handle: string | undefined): string | undefined {
  return handle ? VOLUME_ID_RE.exec(handle)?.[1] : undefined;
}

export interface Scope {
  driverName: string;
  /** The backends this sidecar's driver serves; undefined: all of them (one driver for everything). */
  backends?: ReadonlySet<string>;
  /** The backend of a StorageClass without parameters.backend. */
  defaultBackend: string;
  /** Set on per-node sidecars: only volumes whose node affinity names this node. */
  nodeName?: string;
}

/** Parses --backends (comma-separated); empty or absent: undefined (all). */
export function parseBackends(flag: string | undefined): ReadonlySet<string> | undefined {
  const list = (flag ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const b of list) if (!/^[a-z][a-z0-9]{0,15}$/.test(b)) throw new Error(`--backends: ${JSON.stringify(b)} is not a backend name`);
  return list.length ? new Set(list) : undefined;
}

const servesBackend = (scope: Scope, backend: string | undefined) => (scope.backends ? backend !== undefined && scope.backends.has(backend) : true);

/** The backend a StorageClass provisions on. */
export function backendOfClass(scope: Scope, sc: k8s.V1StorageClass): string {
  return sc.parameters?.backend ?? scope.defaultBackend;
}

/** Whether this sidecar provisions claims of StorageClass `sc`. */
export function servesClass(scope: Scope, sc: k8s.V1StorageClass | undefined): boolean {
  return !!sc && sc.provisioner === scope.driverName && servesBackend(scope, backendOfClass(scope, sc));
}

/** The backends whose volume a claim of `sc` may have: the class's, or (class gone) every one served. */
export function candidateBackends(scope: Scope, sc: k8s.V1StorageClass | undefined): string[] {
  if (sc) return servesClass(scope, sc) ? [backendOfClass(scope, sc)] : [];
  return [...(scope.backends ?? ALL_BACKENDS)];
}

/**
 * Whether a PV's node affinity requires `node`. Strict: a PV without node affinity is
 * reachable from every node, so no single node's sidecar owns it.
 */
export function affinityNames(pv: k8s.V1PersistentVolume, node: string): boolean {
  const terms = pv.spec?.nodeAffinity?.required?.nodeSelectorTerms;
  if (!terms?.length) return false;
  return terms.every((t) => (t.matchExpressions ?? []).some((e) => e.operator === 'In' && e.values?.length === 1 && e.values[0] === node));
}

/** Whether this sidecar acts on `pv` (delete, attach, expand). */
export function servesVolume(scope: Scope, pv: k8s.V1PersistentVolume | undefined): boolean {
  const csi = pv?.spec?.csi;
  if (!csi || csi.driver !== scope.driverName) return false;
  if (!servesBackend(scope, backendOfHandle(csi.volumeHandle))) return false;
  return scope.nodeName ? affinityNames(pv, scope.nodeName) : true;
}
