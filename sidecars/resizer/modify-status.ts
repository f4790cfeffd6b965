// What a claim's VolumeAttributesClass asks of the resizer, and the status it writes back, as
// external-resizer's modify controller does (the same names, so tools that read its claims
// read ours): modifyVolumeStatus {targetVolumeAttributesClassName, status Pending | InProgress
// | Infeasible}, currentVolumeAttributesClassName once done, the ModifyingVolume and
// ModifyVolumeError conditions while not. Pure functions of the claim: unit-tested alone.
import * as grpc from '@grpc/grpc-js';
import type { k8s } from '../common/kube.js';

export const COND_MODIFYING = 'ModifyingVolume';
export const COND_MODIFY_ERROR = 'ModifyVolumeError';
const MODIFY_CONDITIONS = new Set([COND_MODIFYING, COND_MODIFY_ERROR]);

/** Event reasons (external-resizer's pkg/util/events.go). */
export const EV_MODIFY = 'VolumeModify';
export const EV_MODIFY_FAILED = 'VolumeModifyFailed';
export const EV_MODIFY_SUCCESSFUL = 'VolumeModifySuccessful';
export const EV_MODIFY_CANCELED = 'VolumeModifyCanceled';

export type ModifyState = 'Pending' | 'InProgress' | 'Infeasible';

/**
 * What a sync does for the claim's class:
 * - none: the volume has the class asked for;
 * - rollback: the class was removed before it was reached; only the ModifyingVolume
 *   condition goes (`cancel`: there is one), the volume keeps what it has;
 * - modify: ControllerModifyVolume towards `target`; `fresh` when a new target begins
 *   (its class is looked up and the claim marked InProgress first), not when an uncertain
 *   call (one whose outcome is unknown: a timeout, ABORTED) is being finished.
 */
export type ModifyDecision = { kind: 'none' } | { kind: 'rollback'; cancel: boolean } | { kind: 'modify'; target: string; fresh: boolean };

/**
 * `uncertain`: this resizer's last call for the claim ended without an answer that says the
 * volume was not changed; the volume may be half-way to the old target, so that target is
 * finished before a new one is taken (the spec may have moved on meanwhile).
 */
export function modifyDecision(pvc: k8s.V1PersistentVolumeClaim, uncertain: boolean): ModifyDecision {
  const want = pvc.spec?.volumeAttributesClassName ?? '';
  const current = pvc.status?.currentVolumeAttributesClassName ?? '';
  const st = pvc.status?.modifyVolumeStatus;
  if (!st && want === current) return { kind: 'none' };
  const inProgress = st?.status === 'InProgress';
  if (want === '' && !inProgress) return { kind: 'rollback', cancel: (pvc.status?.conditions ?? []).some((c) => c.type === COND_MODIFYING) };
  if ((inProgress && uncertain) || want === '') {
    const target = st?.targetVolumeAttributesClassName ?? '';
    return target ? { kind: 'modify', target, fresh: false } : { kind: 'none' };
  }
  return { kind: 'modify', target: want, fresh: true };
}

/** The gRPC codes after which the call may still be running (or may have changed the volume): the target must be kept. */
const UNCERTAIN_CODES = new Set([grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED, grpc.status.ABORTED]);

/** Whether an error of this gRPC code says the volume was surely not changed. */
export function isFinal(code: number): boolean {
  return !UNCERTAIN_CODES.has(code);
}

/** Only a request the driver calls invalid is Infeasible (retrying the same class cannot help); anything else stays InProgress. */
export function stateAfterError(code: number): ModifyState {
  return code === grpc.status.INVALID_ARGUMENT ? 'Infeasible' : 'InProgress';
}

/** A gRPC code as Go's codes.Code.String() names it ("InvalidArgument"), which is what external-resizer writes as the condition's reason. */
export function codeReason(code: number): string {
  if (code === grpc.status.CANCELLED) return 'Canceled';
  const name = grpc.status[code];
  if (!name) return `Code(${code})`;
  return name === 'OK' ? 'OK' : name.toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
}

type Condition = k8s.V1PersistentVolumeClaimCondition;

/**
 * `conditions` with each of `next` in place of its type's old one; a condition whose status
 * did not change keeps its lastTransitionTime (it did not transition).
 */
export function mergeConditions(conditions: readonly Condition[] | undefined, next: Condition[]): Condition[] {
  const old = conditions ?? [];
  const types = new Set(next.map((c) => c.type));
  const merged = next.map((c) => {
    const prev = old.find((o) => o.type === c.type);
    return prev && prev.status === c.status && prev.lastTransitionTime ? { ...c, lastTransitionTime: prev.lastTransitionTime } : c;
  });
  return [...old.filter((c) => !types.has(c.type)), ...merged];
}

export interface ModifyError {
  code: number;
  message: string;
}

/**
 * The status patch that marks the claim `state` towards `target` (Pending leaves the
 * conditions as they are: nothing was tried). `err`: the failed call's code and message,
 * which becomes the ModifyVolumeError condition.
 */
export function markStatus(pvc: k8s.V1PersistentVolumeClaim, state: ModifyState, target: string, err?: ModifyError, now = new Date()): Record<string, unknown> {
  const status: Record<string, unknown> = { modifyVolumeStatus: { targetVolumeAttributesClassName: target, status: state } };
  if (state === 'Pending') return status;
  // The API types these as Date; a merge patch carries their JSON form, which is what a Date serialises to.
  const at = now as unknown as Date;
  let message = `Modifying volume to "${target}" is in progress.`;
  if (err) message = isFinal(err.code) ? `Modifying volume to "${target}" failed. Waiting for retry.` : `Modifying volume to "${target}" is still in progress.`;
  const next: Condition[] = [{ type: COND_MODIFYING, status: 'True', lastProbeTime: at, lastTransitionTime: at, message }];
  if (err) next.push({ type: COND_MODIFY_ERROR, status: 'True', reason: codeReason(err.code), message: err.message, lastProbeTime: at, lastTransitionTime: at });
  status.conditions = mergeConditions(pvc.status?.conditions, next);
  return status;
}

/** The status patch of a claim whose volume reached `target`: no modification pending, no modify conditions. */
export function completedStatus(pvc: k8s.V1PersistentVolumeClaim, target: string): Record<string, unknown> {
  return {
    modifyVolumeStatus: null,
    currentVolumeAttributesClassName: target,
    conditions: (pvc.status?.conditions ?? []).filter((c) => !MODIFY_CONDITIONS.has(c.type)),
  };
}

/** The status patch of a rolled-back claim: the ModifyingVolume condition goes; ModifyVolumeError stays, it tells what the last attempt met. */
export function rolledBackStatus(pvc: k8s.V1PersistentVolumeClaim): Record<string, unknown> {
  return { conditions: (pvc.status?.conditions ?? []).filter((c) => c.type !== COND_MODIFYING) };
}
