// What the health monitor decides, free of any I/O: which health reports call for an Event
// (a change of condition, never a repeat of one), what the Event says, where kubelet
// stages and publishes a volume, and which pods use a claim. The pollers in controller.ts
// and node.ts feed it what the driver answers.
import { createHash } from 'node:crypto';
import type { k8s } from '../common/kube.js';
import type { EventReason } from '../common/events.js';

/** The Event reasons of kubernetes-csi's external-health-monitor, so existing alerts and dashboards match ours. */
export const REASON_ABNORMAL = 'VolumeConditionAbnormal';
export const REASON_NORMAL = 'VolumeConditionNormal';

/** The statuses CSI v1.13 defines; the spec says a CO ignores any other (a newer plugin's). */
const KNOWN_STATUSES = new Set(['DEGRADED', 'INACCESSIBLE', 'DATA_LOSS']);

/** One VolumeHealthEntry as the driver answers it (enums arrive as their names). */
export interface Problem {
  status: string;
  reason: string;
  message?: string;
}

export interface HealthEvent {
  type: 'Warning' | 'Normal';
  reason: EventReason;
  message: string;
}

/** The entries a CO acts on: known statuses only. */
export function knownProblems(entries: readonly Problem[] | undefined): Problem[] {
  return (entries ?? []).filter((p) => KNOWN_STATUSES.has(String(p.status)));
}

/**
 * What identifies a condition: its (status, reason) pairs, in a fixed order. Messages are
 * left out on purpose: they may carry figures that move between polls (free space, error
 * counts) and would turn every poll into a "new" condition, an event storm.
 */
export function conditionKey(problems: readonly Problem[]): string {
  return [...new Set(problems.map((p) => `${p.status}/${p.reason}`))].sort().join(',');
}

/** The backend's words for a condition, for a person: "DATA_LOSS BackingFileMissing: backing file ... is missing". */
export function describeProblems(problems: readonly Problem[]): string {
  return problems.map((p) => `${p.status} ${p.reason}${p.message ? `: ${p.message}` : ''}`).join('; ');
}

/**
 * The last condition seen per key (a volume, or a volume in one pod) and the Event each new
 * report calls for: a Warning when a volume turns abnormal or its abnormal condition changes,
 * a Normal when it recovers, nothing when the condition is the one already reported. After a
 * restart nothing is remembered, so an abnormal volume is reported once more; a healthy one
 * is not (there is no recovery to tell).
 */
export class HealthStates {
  private readonly last = new Map<string, string>();

  observe(key: string, entries: readonly Problem[] | undefined, subject: string): HealthEvent | undefined {
    const problems = knownProblems(entries);
    const now = conditionKey(problems);
    const before = this.last.get(key);
    this.last.set(key, now);
    if (before === now) return undefined;
    if (now) return { type: 'Warning', reason: REASON_ABNORMAL, message: `${subject}: ${describeProblems(problems)}` };
    if (before) return { type: 'Normal', reason: REASON_NORMAL, message: `${subject} is healthy again (it was ${before})` };
    return undefined; // first sight of a healthy volume
  }

  /** Forgets every key not in `present` (volumes and pods that are gone), so the map does not grow forever. */
  retain(present: ReadonlySet<string>): void {
    for (const k of this.last.keys()) if (!present.has(k)) this.last.delete(k);
  }

  get size(): number {
    return this.last.size;
  }

  /** Keys whose last condition is abnormal. */
  get abnormal(): number {
    let n = 0;
    for (const v of this.last.values()) if (v) n++;
    return n;
  }
}

/** Where kubelet stages and publishes a CSI volume of a pod (its csi_attacher.go / csi_block.go layout). */
export interface KubeletPaths {
  staging: string;
  publish: string;
}

export function kubeletPaths(kubeletDir: string, driver: string, pv: k8s.V1PersistentVolume, podUid: string): KubeletPaths {
  const csiDir = `${kubeletDir}/plugins/kubernetes.io/csi`;
  const pvName = pv.metadata?.name ?? '';
  if (pv.spec?.volumeMode === 'Block') {
    return { staging: `${csiDir}/volumeDevices/staging/${pvName}`, publish: `${csiDir}/volumeDevices/publish/${pvName}/${podUid}` };
  }
  const handleHash = createHash('sha256').update(pv.spec?.csi?.volumeHandle ?? '').digest('hex');
  return {
    staging: `${csiDir}/${driver}/${handleHash}/globalmount`,
    publish: `${kubeletDir}/pods/${podUid}/volumes/kubernetes.io~csi/${pvName}/mount`,
  };
}

/** Whether the pod's containers may still be using its volumes (a finished pod's are unpublished). */
export function podIsActive(pod: k8s.V1Pod): boolean {
  return pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

/** The claims a pod mounts, by name: its PVC volumes and its generic ephemeral volumes' claims ("<pod>-<volume>"). */
export function podClaimNames(pod: k8s.V1Pod): string[] {
  const out: string[] = [];
  for (const v of pod.spec?.volumes ?? []) {
    if (v.persistentVolumeClaim?.claimName) out.push(v.persistentVolumeClaim.claimName);
    else if (v.ephemeral) out.push(`${pod.metadata?.name}-${v.name}`);
  }
  return out;
}

/** The claim a PV is bound to, as the object an Event names. */
export function claimOf(pv: k8s.V1PersistentVolume): k8s.KubernetesObject | undefined {
  const ref = pv.spec?.claimRef;
  if (!ref?.name || !ref.namespace) return undefined;
  return { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: ref.name, namespace: ref.namespace, uid: ref.uid } };
}
