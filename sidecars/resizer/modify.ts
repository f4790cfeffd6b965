// The resizer's second job (external-resizer's modify controller): a bound claim whose
// spec.volumeAttributesClassName is not the class its volume has -> ControllerModifyVolume
// with the class's parameters as mutable_parameters -> the PV's volumeAttributesClassName and
// the claim's status (modify-status.ts). Failures never make a hot loop: each claim's target
// is retried with its own back-off, and an Infeasible one (the driver called the class
// invalid) only after the longest back-off or when the claim asks for another class.
import * as grpc from '@grpc/grpc-js';
import { codeName, CsiClient, rpcErrorText } from '../common/csi-client.js';
import { k8s, type Clients, Watch, mergePatch, httpStatus } from '../common/kube.js';
import type { CommonControllerOptions } from '../common/run.js';
import { Recorder } from '../common/events.js';
import { ANN_MODIFY_SECRET_NAME, ANN_MODIFY_SECRET_NAMESPACE, ANN_STORAGE_PROVISIONER } from '../common/annotations.js';
import { servesVolume } from '../common/scope.js';
import { readSecret } from '../common/secrets.js';
import * as ms from './modify-status.js';

/** The Secret external-resizer passes to ControllerModifyVolume: the PV's modify annotations, else its controllerExpandSecretRef. */
export function modifySecretRef(pv: k8s.V1PersistentVolume): { name?: string; namespace?: string } | undefined {
  const a = pv.metadata?.annotations ?? {};
  if (a[ANN_MODIFY_SECRET_NAME] && a[ANN_MODIFY_SECRET_NAMESPACE]) return { name: a[ANN_MODIFY_SECRET_NAME], namespace: a[ANN_MODIFY_SECRET_NAMESPACE] };
  return pv.spec?.csi?.controllerExpandSecretRef;
}

/** Whether a claim may be ours to modify, from the claim alone (every claim passes through here on each resync). */
export function claimMayModify(pvc: k8s.V1PersistentVolumeClaim, driverName: string): boolean {
  if (!pvc.spec?.volumeName || pvc.status?.phase !== 'Bound' || pvc.metadata?.deletionTimestamp) return false;
  const provisioner = pvc.metadata?.annotations?.[ANN_STORAGE_PROVISIONER];
  return provisioner === undefined || provisioner === driverName;
}

/** How often a VolumeAttributesClass watch that could not start is tried again. */
const CLASSES_RETRY_MS = 60_000;
/** The first retry of a failed target waits this long, doubling with each failure... */
const RETRY_FIRST_MS = 1_000;
/** ...up to this, which is also how long an Infeasible target waits (external-resizer's --retry-interval-max). */
const RETRY_MAX_MS = 300_000;

/** Per claim: the target that failed, how often, and when it may be tried again (with a timer that requeues it then). */
export class TargetBackoff {
  private readonly entries = new Map<string, { target: string; failures: number; notBefore: number; timer: NodeJS.Timeout }>();

  constructor(
    private readonly requeue: (key: string) => void,
    private readonly firstMs = RETRY_FIRST_MS,
    private readonly maxMs = RETRY_MAX_MS,
  ) {}

  /** How long `target` of `key` must still wait; 0 when it may be tried (a new target never waits). */
  remaining(key: string, target: string, now = Date.now()): number {
    const e = this.entries.get(key);
    return e && e.target === target ? Math.max(0, e.notBefore - now) : 0;
  }

  /** Records a failure and returns the wait before the next try. */
  failed(key: string, target: string, infeasible: boolean, now = Date.now()): number {
    const prev = this.entries.get(key);
    clearTimeout(prev?.timer);
    const failures = (prev?.target === target ? prev.failures : 0) + 1;
    const delay = infeasible ? this.maxMs : Math.min(this.firstMs * 2 ** (failures - 1), this.maxMs);
    const timer = setTimeout(() => this.requeue(key), delay);
    timer.unref();
    this.entries.set(key, { target, failures, notBefore: now + delay, timer });
    return delay;
  }

  forget(key: string): void {
    clearTimeout(this.entries.get(key)?.timer);
    this.entries.delete(key);
  }

  stop(): void {
    for (const e of this.entries.values()) clearTimeout(e.timer);
    this.entries.clear();
  }
}

export class Modifier {
  private classes!: Watch<k8s.V1VolumeAttributesClass>;
  private classesReady = false;
  private classesRetry?: NodeJS.Timeout;
  private stopped = false;
  private readonly backoff: TargetBackoff;
  /** Claims whose last ControllerModifyVolume ended uncertain (true) or surely (false); unknown ones are judged by their status. */
  private readonly uncertain = new Map<string, boolean>();

  constructor(
    private readonly k: Clients,
    private readonly csi: CsiClient,
    private readonly opts: CommonControllerOptions,
    private readonly recorder: Recorder,
    /** The claims known so far (none before their watch has started). */
    private readonly claims: () => readonly k8s.V1PersistentVolumeClaim[],
    private readonly requeue: (key: string) => void,
  ) {
    this.backoff = new TargetBackoff(requeue);
  }

  async start(): Promise<void> {
    // A class that appears is what a Pending claim waits for: a new chance, not the next back-off
    // step. Only its first sight counts: the watch hands every class over again each resync
    // (and a class's parameters cannot change).
    const seen = new Set<string>();
    const onClass = (name: string, obj: k8s.V1VolumeAttributesClass | undefined) => {
      if (!obj) seen.delete(name);
      if (!obj || seen.has(name)) return;
      seen.add(name);
      for (const c of this.claims()) {
        if (c.spec?.volumeAttributesClassName !== name) continue;
        const key = `${c.metadata!.namespace}/${c.metadata!.name}`;
        this.backoff.forget(key);
        this.requeue(key);
      }
    };
    this.classes = new Watch(this.k.kc, '/apis/storage.k8s.io/v1/volumeattributesclasses', () => this.k.storage.listVolumeAttributesClass(), onClass, this.opts.log);
    await this.startClasses();
  }

  /**
   * A cluster without storage.k8s.io/v1 VolumeAttributesClasses (Kubernetes < 1.34), or RBAC
   * that does not grant them, must not cost the resizer its expansions: modification waits,
   * said once in the log, and the watch is tried again each minute.
   */
  private async startClasses(): Promise<void> {
    try {
      await this.classes.start();
      this.classesReady = true;
    } catch (err) {
      if (this.stopped) return;
      this.opts.log.error({ err: err instanceof Error ? err.message : String(err), retryInMs: CLASSES_RETRY_MS }, 'cannot watch VolumeAttributesClasses: volume modification waits until it can');
      this.classesRetry = setTimeout(() => void this.startClasses(), CLASSES_RETRY_MS);
      this.classesRetry.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.classesRetry);
    this.backoff.stop();
    await this.classes?.stop();
  }

  /** Brings the claim's volume to its class; never throws (failures are the claim's status, its Events and a back-off). */
  async sync(key: string, pvc: k8s.V1PersistentVolumeClaim | undefined): Promise<void> {
    if (!pvc) {
      this.backoff.forget(key);
      this.uncertain.delete(key);
      return;
    }
    if (!this.classesReady || !claimMayModify(pvc, this.opts.driverName)) return;
    const uncertain = this.uncertain.get(key) ?? pvc.status?.modifyVolumeStatus?.status === 'InProgress';
    const d = ms.modifyDecision(pvc, uncertain);
    if (d.kind === 'none') return;
    try {
      if (d.kind === 'rollback') {
        if (d.cancel) {
          await this.recorder.event(pvc, 'Normal', ms.EV_MODIFY_CANCELED, 'Cancelled modify.');
          await this.patchClaimStatus(pvc, ms.rolledBackStatus(pvc));
        }
        this.backoff.forget(key);
        return;
      }
      if (this.backoff.remaining(key, d.target) > 0) return; // its timer requeues it
      await this.modify(key, pvc, d.target, d.fresh);
    } catch (err) {
      // API errors (a conflict, a lost connection): the same back-off, the status untouched
      const delay = this.backoff.failed(key, d.kind === 'modify' ? d.target : '', false);
      this.opts.log.warn({ pvc: key, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, 'volume modification failed; will retry');
    }
  }

  /** One attempt towards `target` (the whole of external-resizer's modify: look-up, InProgress, the call, the outcome). */
  private async modify(key: string, pvc: k8s.V1PersistentVolumeClaim, target: string, fresh: boolean): Promise<void> {
    const pv = await this.volumeOf(pvc);
    if (!pv) return;
    const vac = this.classes.get(target);
    if (!vac) {
      await this.recorder.event(pvc, 'Warning', ms.EV_MODIFY_FAILED, `VAC "${target}" does not exist.`);
      if (fresh) await this.patchClaimStatus(pvc, ms.markStatus(pvc, 'Pending', target));
      this.backoff.failed(key, target, false);
      return;
    }
    if (fresh) {
      // The resourceVersion makes a stale cache's claim fail here (409) rather than overwrite newer conditions.
      pvc = await this.patchClaimStatus(pvc, ms.markStatus(pvc, 'InProgress', target), true);
      await this.recorder.event(pvc, 'Normal', ms.EV_MODIFY, `modifying volume ${pv.metadata?.name} of claim ${pvc.metadata?.name} to VolumeAttributesClass ${target}`);
    }
    try {
      const secrets = await readSecret(this.k.core, modifySecretRef(pv));
      await this.csi.Controller.ControllerModifyVolume({ volume_id: pv.spec!.csi!.volumeHandle, secrets, mutable_parameters: vac.parameters ?? {} }, this.opts.timeoutMs);
    } catch (err) {
      await this.failed(key, pvc, target, err);
      return;
    }
    this.uncertain.set(key, false);
    // The PV first: a claim marked done whose PV still names the old class would never be corrected.
    await this.k.core.patchPersistentVolume({ name: pv.metadata!.name!, body: { spec: { volumeAttributesClassName: target } } }, mergePatch);
    await this.patchClaimStatus(pvc, ms.completedStatus(pvc, target));
    this.backoff.forget(key);
    await this.recorder.event(pvc, 'Normal', ms.EV_MODIFY_SUCCESSFUL, `modified volume ${pv.metadata?.name} of claim ${pvc.metadata?.name} to VolumeAttributesClass ${target}`);
    this.opts.log.info({ pvc: key, pv: pv.metadata?.name, class: target }, 'volume modified');
  }

  private async failed(key: string, pvc: k8s.V1PersistentVolumeClaim, target: string, err: unknown): Promise<void> {
    const rpc = codeName(err) !== undefined;
    // Not the driver's answer (a Secret that cannot be read): the call was never made, so the
    // volume is surely unchanged, which is what UNKNOWN (a final code) says.
    const code = rpc ? (err as { code: number }).code : grpc.status.UNKNOWN;
    const message = rpc ? ((err as { details?: string }).details ?? '') : err instanceof Error ? err.message : String(err);
    const final = ms.isFinal(code);
    const state = ms.stateAfterError(code);
    this.uncertain.set(key, !final);
    await this.patchClaimStatus(pvc, ms.markStatus(pvc, state, target, { code, message }));
    const text = `${rpc ? rpcErrorText(err) : message}${final ? '' : `. Still modifying to VAC ${target}`}`;
    await this.recorder.event(pvc, 'Warning', ms.EV_MODIFY_FAILED, text);
    const delay = this.backoff.failed(key, target, state === 'Infeasible');
    this.opts.log.warn({ pvc: key, class: target, code: codeName(err), state, retryInMs: delay }, 'ControllerModifyVolume failed');
  }

  /** The claim's PV when it is a volume this sidecar serves. */
  private async volumeOf(pvc: k8s.V1PersistentVolumeClaim): Promise<k8s.V1PersistentVolume | undefined> {
    let pv: k8s.V1PersistentVolume;
    try {
      pv = await this.k.core.readPersistentVolume({ name: pvc.spec!.volumeName! });
    } catch (err) {
      if (httpStatus(err) === 404) return undefined;
      throw err;
    }
    return servesVolume(this.opts, pv) && pv.spec?.csi ? pv : undefined;
  }

  private async patchClaimStatus(pvc: k8s.V1PersistentVolumeClaim, status: Record<string, unknown>, checkVersion = false): Promise<k8s.V1PersistentVolumeClaim> {
    const metadata = checkVersion ? { resourceVersion: pvc.metadata?.resourceVersion } : undefined;
    return this.k.core.patchNamespacedPersistentVolumeClaimStatus({ name: pvc.metadata!.name!, namespace: pvc.metadata!.namespace!, body: { metadata, status } }, mergePatch);
  }
}
