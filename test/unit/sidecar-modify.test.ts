// The resizer's VolumeAttributesClass decisions and the claim status they write
// (sidecars/resizer/modify-status.ts), the Secret it passes, and its per-target back-off
// (sidecars/resizer/modify.ts): what a user reads in `kubectl get pvc -o yaml`.
import { describe, it, expect } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import type { k8s } from '../../sidecars/common/kube.js';
import * as ms from '../../sidecars/resizer/modify-status.js';
import { waitFor } from '../lib/wait.js';
import { claimMayModify, modifySecretRef, TargetBackoff } from '../../sidecars/resizer/modify.js';

const DRIVER = 'csi.tscsi.dev';
const T0 = new Date('2026-12-07T10:00:00Z');
const T1 = new Date('2026-12-07T10:05:00Z');

function claim(spec: string | undefined, status: k8s.V1PersistentVolumeClaimStatus = {}): k8s.V1PersistentVolumeClaim {
  return {
    metadata: { name: 'data', namespace: 'team-a' },
    spec: { volumeName: 'pvc-1', volumeAttributesClassName: spec },
    status: { phase: 'Bound', ...status },
  };
}

const cond = (type: string, extra: Partial<k8s.V1PersistentVolumeClaimCondition> = {}): k8s.V1PersistentVolumeClaimCondition => ({ type, status: 'True', ...extra });

describe('what a sync does for a claim', () => {
  it('nothing when the claim has the class it asks for and no modification is recorded', () => {
    expect(ms.modifyDecision(claim(undefined), false)).toEqual({ kind: 'none' });
    expect(ms.modifyDecision(claim('fast', { currentVolumeAttributesClassName: 'fast' }), false)).toEqual({ kind: 'none' });
  });

  it('modifies towards a new class, a fresh target', () => {
    expect(ms.modifyDecision(claim('fast'), false)).toEqual({ kind: 'modify', target: 'fast', fresh: true });
    expect(ms.modifyDecision(claim('slow', { currentVolumeAttributesClassName: 'fast' }), false)).toEqual({ kind: 'modify', target: 'slow', fresh: true });
  });

  it('retries a class recorded Infeasible or Pending as a fresh target (the back-off decides when)', () => {
    const infeasible = claim('bad', { modifyVolumeStatus: { targetVolumeAttributesClassName: 'bad', status: 'Infeasible' } });
    expect(ms.modifyDecision(infeasible, false)).toEqual({ kind: 'modify', target: 'bad', fresh: true });
    const pending = claim('later', { modifyVolumeStatus: { targetVolumeAttributesClassName: 'later', status: 'Pending' } });
    expect(ms.modifyDecision(pending, false)).toEqual({ kind: 'modify', target: 'later', fresh: true });
  });

  it('after an uncertain call, finishes the old target even when the claim now asks for another', () => {
    const c = claim('slow', { currentVolumeAttributesClassName: 'a', modifyVolumeStatus: { targetVolumeAttributesClassName: 'fast', status: 'InProgress' } });
    expect(ms.modifyDecision(c, true)).toEqual({ kind: 'modify', target: 'fast', fresh: false });
    // a call that surely failed leaves the volume unchanged: the new target is taken
    expect(ms.modifyDecision(c, false)).toEqual({ kind: 'modify', target: 'slow', fresh: true });
  });

  it('a class removed before it was reached is a rollback, cancelled only when a modification was shown', () => {
    const shown = claim(undefined, { modifyVolumeStatus: { targetVolumeAttributesClassName: 'bad', status: 'Infeasible' }, conditions: [cond(ms.COND_MODIFYING)] });
    expect(ms.modifyDecision(shown, false)).toEqual({ kind: 'rollback', cancel: true });
    expect(ms.modifyDecision(claim(undefined, { modifyVolumeStatus: { targetVolumeAttributesClassName: 'x', status: 'Pending' } }), false)).toEqual({ kind: 'rollback', cancel: false });
    // but an InProgress one is finished first (it may already have changed the volume)
    const running = claim(undefined, { modifyVolumeStatus: { targetVolumeAttributesClassName: 'fast', status: 'InProgress' } });
    expect(ms.modifyDecision(running, false)).toEqual({ kind: 'modify', target: 'fast', fresh: false });
  });
});

describe('the errors of ControllerModifyVolume', () => {
  it('only INVALID_ARGUMENT is Infeasible; everything else stays InProgress', () => {
    expect(ms.stateAfterError(grpc.status.INVALID_ARGUMENT)).toBe('Infeasible');
    for (const c of [grpc.status.NOT_FOUND, grpc.status.INTERNAL, grpc.status.DEADLINE_EXCEEDED, grpc.status.FAILED_PRECONDITION]) expect(ms.stateAfterError(c)).toBe('InProgress');
  });

  it('timeouts, cancellation, unavailability, exhaustion and ABORTED leave the outcome uncertain', () => {
    for (const c of [grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED, grpc.status.ABORTED]) expect(ms.isFinal(c)).toBe(false);
    for (const c of [grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.INTERNAL, grpc.status.UNKNOWN]) expect(ms.isFinal(c)).toBe(true);
  });

  it('names codes as Go does, which is what external-resizer puts in the condition reason', () => {
    expect(ms.codeReason(grpc.status.INVALID_ARGUMENT)).toBe('InvalidArgument');
    expect(ms.codeReason(grpc.status.DEADLINE_EXCEEDED)).toBe('DeadlineExceeded');
    expect(ms.codeReason(grpc.status.CANCELLED)).toBe('Canceled');
    expect(ms.codeReason(grpc.status.NOT_FOUND)).toBe('NotFound');
    expect(ms.codeReason(grpc.status.UNKNOWN)).toBe('Unknown');
  });
});

describe('the status written', () => {
  it('Pending names the target and leaves the conditions as they are', () => {
    const c = claim('later', { conditions: [cond('Resizing')] });
    expect(ms.markStatus(c, 'Pending', 'later', undefined, T0)).toEqual({ modifyVolumeStatus: { targetVolumeAttributesClassName: 'later', status: 'Pending' } });
  });

  it('InProgress adds ModifyingVolume and keeps the other conditions', () => {
    const s = ms.markStatus(claim('fast', { conditions: [cond('Resizing')] }), 'InProgress', 'fast', undefined, T0);
    expect(s.modifyVolumeStatus).toEqual({ targetVolumeAttributesClassName: 'fast', status: 'InProgress' });
    expect(s.conditions).toEqual([cond('Resizing'), cond(ms.COND_MODIFYING, { lastProbeTime: T0, lastTransitionTime: T0, message: 'Modifying volume to "fast" is in progress.' })]);
  });

  it('a failure adds ModifyVolumeError with the code and the driver message, and says whether the change may still be running', () => {
    const infeasible = ms.markStatus(claim('bad'), 'Infeasible', 'bad', { code: grpc.status.INVALID_ARGUMENT, message: 'mutable parameter "iops" is not supported' }, T0);
    expect(infeasible.modifyVolumeStatus).toEqual({ targetVolumeAttributesClassName: 'bad', status: 'Infeasible' });
    expect(infeasible.conditions).toEqual([
      cond(ms.COND_MODIFYING, { lastProbeTime: T0, lastTransitionTime: T0, message: 'Modifying volume to "bad" failed. Waiting for retry.' }),
      cond(ms.COND_MODIFY_ERROR, { reason: 'InvalidArgument', message: 'mutable parameter "iops" is not supported', lastProbeTime: T0, lastTransitionTime: T0 }),
    ]);
    const slow = ms.markStatus(claim('fast'), 'InProgress', 'fast', { code: grpc.status.DEADLINE_EXCEEDED, message: 'deadline' }, T0);
    expect((slow.conditions as k8s.V1PersistentVolumeClaimCondition[])[0].message).toBe('Modifying volume to "fast" is still in progress.');
  });

  it('a condition that stays True keeps the time it became True', () => {
    const c = claim('fast', { conditions: [cond(ms.COND_MODIFYING, { lastTransitionTime: T0, message: 'old' })] });
    const s = ms.markStatus(c, 'InProgress', 'fast', { code: grpc.status.INTERNAL, message: 'x' }, T1);
    const [modifying, error] = s.conditions as k8s.V1PersistentVolumeClaimCondition[];
    expect(modifying).toMatchObject({ type: ms.COND_MODIFYING, lastTransitionTime: T0, lastProbeTime: T1 });
    expect(error).toMatchObject({ type: ms.COND_MODIFY_ERROR, lastTransitionTime: T1 });
  });

  it('completion records the current class, clears modifyVolumeStatus and only the modify conditions', () => {
    const c = claim('fast', { modifyVolumeStatus: { targetVolumeAttributesClassName: 'fast', status: 'InProgress' }, conditions: [cond('Resizing'), cond(ms.COND_MODIFYING), cond(ms.COND_MODIFY_ERROR)] });
    expect(ms.completedStatus(c, 'fast')).toEqual({ modifyVolumeStatus: null, currentVolumeAttributesClassName: 'fast', conditions: [cond('Resizing')] });
  });

  it('a rollback removes ModifyingVolume and keeps the last error', () => {
    const c = claim(undefined, { conditions: [cond(ms.COND_MODIFYING), cond(ms.COND_MODIFY_ERROR)] });
    expect(ms.rolledBackStatus(c)).toEqual({ conditions: [cond(ms.COND_MODIFY_ERROR)] });
  });
});

describe('which claims and which Secret', () => {
  it('bound claims of this driver (or of none named), not being deleted', () => {
    expect(claimMayModify(claim('fast'), DRIVER)).toBe(true);
    expect(claimMayModify({ ...claim('fast'), status: { phase: 'Pending' } }, DRIVER)).toBe(false);
    const other = claim('fast');
    other.metadata!.annotations = { 'volume.kubernetes.io/storage-provisioner': 'other.csi.example.com' };
    expect(claimMayModify(other, DRIVER)).toBe(false);
    const going = claim('fast');
    going.metadata!.deletionTimestamp = T0;
    expect(claimMayModify(going, DRIVER)).toBe(false);
  });

  it("the PV's modify-secret annotations, else its controllerExpandSecretRef (as external-resizer)", () => {
    const expand = { name: 'exp', namespace: 'ns' };
    const pv = (annotations?: Record<string, string>): k8s.V1PersistentVolume => ({ metadata: { annotations }, spec: { csi: { driver: DRIVER, volumeHandle: 'h', controllerExpandSecretRef: expand } } });
    expect(modifySecretRef(pv())).toEqual(expand);
    expect(modifySecretRef(pv({ 'volume.kubernetes.io/controller-modify-secret-name': 'mod', 'volume.kubernetes.io/controller-modify-secret-namespace': 'ns2' }))).toEqual({ name: 'mod', namespace: 'ns2' });
    expect(modifySecretRef(pv({ 'volume.kubernetes.io/controller-modify-secret-name': 'mod' }))).toEqual(expand);
  });
});

describe('the back-off of a failing target', () => {
  it('doubles per failure of the same target, waits the longest for an Infeasible one, and never delays a new target', () => {
    const requeued: string[] = [];
    const b = new TargetBackoff((k) => requeued.push(k), 1_000, 300_000);
    try {
      const now = 1_000_000;
      expect(b.failed('ns/a', 'fast', false, now)).toBe(1_000);
      expect(b.failed('ns/a', 'fast', false, now)).toBe(2_000);
      expect(b.failed('ns/a', 'fast', false, now)).toBe(4_000);
      expect(b.remaining('ns/a', 'fast', now + 1_000)).toBe(3_000);
      expect(b.remaining('ns/a', 'slow', now)).toBe(0);
      expect(b.failed('ns/a', 'slow', false, now)).toBe(1_000);
      expect(b.failed('ns/b', 'bad', true, now)).toBe(300_000);
      expect(b.remaining('ns/b', 'bad', now + 299_999)).toBe(1);
      b.forget('ns/b');
      expect(b.remaining('ns/b', 'bad', now)).toBe(0);
    } finally {
      b.stop();
    }
    expect(requeued).toEqual([]);
  });

  it('requeues the claim when its wait is over', async () => {
    const requeued: string[] = [];
    const b = new TargetBackoff((k) => requeued.push(k), 1, 10);
    b.failed('ns/a', 'fast', false);
    await waitFor('the claim requeued', async () => requeued.length > 0, { everyMs: 1 });
    expect(requeued).toEqual(['ns/a']);
    b.stop();
  });
});
