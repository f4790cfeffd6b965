// The health monitor's decisions (sidecars/health-monitor/health.ts): one Event per change
// of a volume's condition, never one per poll; what the Event says; kubelet's paths.
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { HealthStates, REASON_ABNORMAL, REASON_NORMAL, claimOf, conditionKey, kubeletPaths, podClaimNames, podIsActive } from '../../sidecars/health-monitor/health.js';

const missing = { status: 'DATA_LOSS', reason: 'BackingFileMissing', message: 'backing file /d/v.img is missing: restore the volume' };
const unmounted = { status: 'INACCESSIBLE', reason: 'PublishMountMissing', message: 'nothing is mounted at /p any more' };

describe('HealthStates: one event per change of condition', () => {
  it('abnormal -> one Warning with the backend\'s status, reason and message; repeated polls -> nothing', () => {
    const s = new HealthStates();
    expect(s.observe('v1', [], 'volume v1')).toBeUndefined();
    const ev = s.observe('v1', [missing], 'volume v1');
    expect(ev).toEqual({ type: 'Warning', reason: REASON_ABNORMAL, message: `volume v1: DATA_LOSS BackingFileMissing: ${missing.message}` });
    for (let i = 0; i < 5; i++) expect(s.observe('v1', [missing], 'volume v1')).toBeUndefined();
  });

  it('recovery -> one Normal naming what it was; further healthy polls -> nothing', () => {
    const s = new HealthStates();
    s.observe('v1', [missing], 'volume v1');
    expect(s.observe('v1', [], 'volume v1')).toEqual({ type: 'Normal', reason: REASON_NORMAL, message: 'volume v1 is healthy again (it was DATA_LOSS/BackingFileMissing)' });
    expect(s.observe('v1', [], 'volume v1')).toBeUndefined();
    expect(s.observe('v1', undefined, 'volume v1')).toBeUndefined();
  });

  it('a message that changes under the same (status, reason) is no new condition; another reason is', () => {
    const s = new HealthStates();
    s.observe('v1', [{ ...missing, message: 'pool 91% full' }], 'v');
    expect(s.observe('v1', [{ ...missing, message: 'pool 92% full' }], 'v')).toBeUndefined();
    const ev = s.observe('v1', [missing, unmounted], 'v');
    expect(ev?.type).toBe('Warning');
    expect(ev?.message).toContain('INACCESSIBLE PublishMountMissing');
    // the same pair of problems in another order is the same condition
    expect(s.observe('v1', [unmounted, missing], 'v')).toBeUndefined();
    expect(conditionKey([unmounted, missing])).toBe(conditionKey([missing, unmounted]));
  });

  it('after a restart (nothing remembered) an abnormal volume is reported once, a healthy one not at all', () => {
    const s = new HealthStates();
    expect(s.observe('v1', [missing], 'v')?.type).toBe('Warning');
    expect(s.observe('v2', [], 'v')).toBeUndefined();
  });

  it('volumes are tracked apart; statuses CSI does not define are ignored', () => {
    const s = new HealthStates();
    expect(s.observe('a', [missing], 'a')?.type).toBe('Warning');
    expect(s.observe('b', [missing], 'b')?.type).toBe('Warning');
    expect(s.observe('c', [{ status: 'MULTIPATH_LOSS', reason: 'PathDown' }], 'c')).toBeUndefined();
    expect(s.observe('c', [{ status: 'MULTIPATH_LOSS', reason: 'PathDown' }, unmounted], 'c')?.message).not.toContain('MULTIPATH_LOSS');
  });

  it('forgets volumes that are gone; one that comes back is new', () => {
    const s = new HealthStates();
    s.observe('a', [missing], 'a');
    s.observe('b', [], 'b');
    s.retain(new Set(['b']));
    expect(s.size).toBe(1);
    expect(s.observe('a', [missing], 'a')?.type).toBe('Warning');
  });

  it('counts the volumes abnormal now (the abnormal_volumes gauge): recovered and forgotten ones leave the count', () => {
    const s = new HealthStates();
    s.observe('a', [missing], 'a');
    s.observe('b', [missing], 'b');
    s.observe('c', [], 'c');
    expect(s.abnormal).toBe(2);
    s.observe('b', [], 'b');
    expect(s.abnormal).toBe(1);
    s.retain(new Set(['b', 'c']));
    expect(s.abnormal).toBe(0);
  });
});

describe('where kubelet puts a volume, which pods use a claim', () => {
  const pv = (volumeMode?: string) => ({ metadata: { name: 'pvc-1' }, spec: { volumeMode, csi: { driver: 'csi.tscsi.dev', volumeHandle: 'vol-loop-0123' } } });

  it('filesystem volumes: globalmount under sha256(handle), the pod\'s kubernetes.io~csi mount', () => {
    const sha = createHash('sha256').update('vol-loop-0123').digest('hex');
    expect(kubeletPaths('/var/lib/kubelet', 'csi.tscsi.dev', pv(), 'uid-1')).toEqual({
      staging: `/var/lib/kubelet/plugins/kubernetes.io/csi/csi.tscsi.dev/${sha}/globalmount`,
      publish: '/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/pvc-1/mount',
    });
  });

  it('block volumes: volumeDevices staging and publish by PV name and pod UID', () => {
    expect(kubeletPaths('/k', 'csi.tscsi.dev', pv('Block'), 'uid-1')).toEqual({
      staging: '/k/plugins/kubernetes.io/csi/volumeDevices/staging/pvc-1',
      publish: '/k/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-1/uid-1',
    });
  });

  it('a pod\'s claims: PVC volumes and generic ephemeral ones; finished pods use none', () => {
    const p = {
      metadata: { name: 'web' },
      spec: { containers: [], volumes: [{ name: 'a', persistentVolumeClaim: { claimName: 'data' } }, { name: 'scratch', ephemeral: {} }, { name: 'cfg', configMap: { name: 'x' } }] },
      status: { phase: 'Running' },
    };
    expect(podClaimNames(p)).toEqual(['data', 'web-scratch']);
    expect(podIsActive(p)).toBe(true);
    expect(podIsActive({ ...p, status: { phase: 'Succeeded' } })).toBe(false);
  });

  it('the claim of a PV as an Event names it; an unbound PV has none', () => {
    expect(claimOf({ spec: { claimRef: { name: 'data', namespace: 'ns', uid: 'u' } } })).toEqual({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: 'data', namespace: 'ns', uid: 'u' } });
    expect(claimOf({ spec: {} })).toBeUndefined();
  });
});
