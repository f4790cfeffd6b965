// Which objects each sidecar acts on (central RBD sidecars vs one set per node for loop and
// LVM), the provisioner's delete decision, and the resizer's claim filter: pure decisions.
import { describe, it, expect } from 'vitest';
import { deriveId } from '../../driver/ids.js';
import { derivedVolumeId, backendOfHandle, servesClass, servesVolume, candidateBackends, parseBackends, affinityNames, type Scope } from '../../sidecars/common/scope.js';
import { volumeAction } from '../../sidecars/provisioner/provisioner.js';
import { PV_FINALIZER, ANN_PROVISIONED_BY } from '../../sidecars/common/annotations.js';
import { claimWantsExpansion } from '../../sidecars/resizer/resizer.js';
import { watchBackoffMs } from '../../sidecars/common/kube.js';

const DRIVER = 'csi.tscsi.dev';
const central: Scope = { driverName: DRIVER, backends: new Set(['rbd']), defaultBackend: 'loop' };
const nodeA: Scope = { driverName: DRIVER, backends: new Set(['loop', 'lvm']), defaultBackend: 'loop', nodeName: 'node-a' };
const nodeB: Scope = { ...nodeA, nodeName: 'node-b' };
const all: Scope = { driverName: DRIVER, defaultBackend: 'loop' };
const scopes = { central, nodeA, nodeB };

const sc = (parameters: Record<string, string> | undefined, provisioner = DRIVER) => ({ metadata: { name: 'sc' }, provisioner, parameters });
const pv = (backend: string, node?: string, driver = DRIVER) => ({
  metadata: { name: 'pv' },
  spec: {
    csi: { driver, volumeHandle: derivedVolumeId(backend, 'pvc-1') },
    ...(node ? { nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.tscsi.dev/node', operator: 'In', values: [node] }] }] } } } : {}),
  },
});
const who = (f: (s: Scope) => boolean) => Object.entries(scopes).filter(([, s]) => f(s)).map(([n]) => n);

describe('which sidecar serves which object', () => {
  it('derives the volume ID exactly as the driver does', () => {
    for (const [b, n] of [['loop', 'pvc-0a1b'], ['rbd', 'pvc-x'], ['lvm', 'ünïcode-name']]) expect(derivedVolumeId(b, n)).toBe(deriveId('vol', b, n));
    expect(backendOfHandle(deriveId('vol', 'lvm', 'x'))).toBe('lvm');
    // An ID that says where its volume lives (cluster, pool, namespace) still names its backend.
    expect(backendOfHandle(deriveId('vol', 'rbd', 'x', ['my-cluster', 'pool-1', '']))).toBe('rbd');
    expect(backendOfHandle(deriveId('snap', 'lvm', 'x'))).toBeUndefined();
    expect(backendOfHandle('some-other-drivers-handle')).toBeUndefined();
  });

  it('claims: exactly one of central/node provisioners takes each StorageClass', () => {
    expect(who((s) => servesClass(s, sc({ backend: 'rbd' })))).toEqual(['central']);
    expect(who((s) => servesClass(s, sc({ backend: 'lvm' })))).toEqual(['nodeA', 'nodeB']); // then only the selected node's
    expect(who((s) => servesClass(s, sc(undefined)))).toEqual(['nodeA', 'nodeB']); // no backend: the default, loop
    expect(who((s) => servesClass(s, sc({ backend: 'rbd' }, 'other.csi.dev')))).toEqual([]);
    expect(servesClass(all, sc({ backend: 'rbd' }))).toBe(true);
  });

  it('PVs: RBD ones only centrally, a loop/LVM one only on the node its affinity names', () => {
    expect(who((s) => servesVolume(s, pv('rbd')))).toEqual(['central']);
    expect(who((s) => servesVolume(s, pv('loop', 'node-a')))).toEqual(['nodeA']);
    expect(who((s) => servesVolume(s, pv('lvm', 'node-b')))).toEqual(['nodeB']);
    // a node-local volume without affinity belongs to no node; another driver's to nobody
    expect(who((s) => servesVolume(s, pv('loop')))).toEqual([]);
    expect(who((s) => servesVolume(s, pv('rbd', undefined, 'other.csi.dev')))).toEqual([]);
    // a handle that is not the driver's: only a sidecar serving every backend takes it
    const foreign = { spec: { csi: { driver: DRIVER, volumeHandle: 'imported-by-hand' } } };
    expect(who((s) => servesVolume(s, foreign))).toEqual([]);
    expect(servesVolume(all, foreign)).toBe(true);
  });

  it('node affinity must pin the node in every term', () => {
    const two = { spec: { nodeAffinity: { required: { nodeSelectorTerms: [
      { matchExpressions: [{ key: 'k', operator: 'In', values: ['node-a'] }] },
      { matchExpressions: [{ key: 'k', operator: 'In', values: ['node-b'] }] },
    ] } } } };
    expect(affinityNames(two, 'node-a')).toBe(false);
    expect(affinityNames(pv('loop', 'node-a'), 'node-a')).toBe(true);
    expect(affinityNames({ spec: { nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'k', operator: 'NotIn', values: ['node-a'] }] }] } } } }, 'node-a')).toBe(false);
  });

  it('orphan clean-up looks in the class\'s backend, or every served one when the class is gone', () => {
    expect(candidateBackends(nodeA, sc({ backend: 'lvm' }))).toEqual(['lvm']);
    expect(candidateBackends(nodeA, sc({ backend: 'rbd' }))).toEqual([]);
    expect(candidateBackends(nodeA, undefined)).toEqual(['loop', 'lvm']);
    expect(candidateBackends(all, undefined)).toEqual(['loop', 'lvm', 'rbd']);
  });

  it('--backends', () => {
    expect(parseBackends('loop, lvm')).toEqual(new Set(['loop', 'lvm']));
    expect(parseBackends('')).toBeUndefined();
    expect(() => parseBackends('../x')).toThrow(/not a backend name/);
  });
});

describe('the provisioner deletes a volume only when its PV is Released', () => {
  const ourPv = (phase: string, policy: string, deleting: boolean, finalizer = true) => ({
    metadata: { name: 'pv', annotations: { [ANN_PROVISIONED_BY]: DRIVER }, finalizers: finalizer ? ['kubernetes.io/pv-protection', PV_FINALIZER] : ['kubernetes.io/pv-protection'], ...(deleting ? { deletionTimestamp: new Date() } : {}) },
    spec: { persistentVolumeReclaimPolicy: policy },
    status: { phase },
  });
  it('a Bound PV deleted by hand keeps its volume (pv-protection holds it until the claim goes)', () => {
    expect(volumeAction(ourPv('Bound', 'Delete', true), DRIVER)).toBe('none');
  });
  it('Released with reclaim Delete: deleted, whether or not the PV object is being deleted', () => {
    expect(volumeAction(ourPv('Released', 'Delete', false), DRIVER)).toBe('delete');
    expect(volumeAction(ourPv('Released', 'Delete', true), DRIVER)).toBe('delete');
  });
  it('never for Failed, Available, Pending, Retain, without our finalizer while deleting, or another provisioner\'s PV', () => {
    for (const phase of ['Failed', 'Available', 'Pending', 'Bound']) expect(volumeAction(ourPv(phase, 'Delete', false), DRIVER)).toBe('none');
    expect(volumeAction(ourPv('Released', 'Retain', false), DRIVER)).toBe('none');
    expect(volumeAction(ourPv('Released', 'Delete', true, false), DRIVER)).toBe('none');
    expect(volumeAction(ourPv('Released', 'Delete', false), 'other.csi.dev')).toBe('none');
  });
  it('Retain: the PV object being deleted loses our finalizer, the volume stays', () => {
    expect(volumeAction(ourPv('Released', 'Retain', true), DRIVER)).toBe('drop-finalizer');
    expect(volumeAction(ourPv('Bound', 'Retain', true), DRIVER)).toBe('drop-finalizer');
  });
});

describe('the resizer reads a PV only for claims that may need expansion', () => {
  const claim = (req: string, cap: string, extra: { status?: object; annotations?: Record<string, string> } = {}) => ({
    metadata: { name: 'c', namespace: 'ns', annotations: extra.annotations ?? {} },
    spec: { volumeName: 'pv', resources: { requests: { storage: req } } },
    status: { phase: 'Bound', capacity: { storage: cap }, ...(extra.status ?? {}) },
  });
  it('skips claims at their size, of other drivers, or waiting for the node', () => {
    expect(claimWantsExpansion(claim('1Gi', '1Gi'), DRIVER)).toBe(false);
    expect(claimWantsExpansion(claim('2Gi', '1Gi', { annotations: { 'volume.kubernetes.io/storage-provisioner': 'ebs.csi.aws.com' } }), DRIVER)).toBe(false);
    expect(claimWantsExpansion(claim('2Gi', '1Gi', { status: { allocatedResources: { storage: '2Gi' }, allocatedResourceStatuses: { storage: 'NodeResizePending' } } }), DRIVER)).toBe(false);
  });
  it('takes claims asking for more, also more than a pending node resize', () => {
    expect(claimWantsExpansion(claim('2Gi', '1Gi'), DRIVER)).toBe(true);
    expect(claimWantsExpansion(claim('2Gi', '1Gi', { annotations: { 'volume.kubernetes.io/storage-provisioner': DRIVER } }), DRIVER)).toBe(true);
    expect(claimWantsExpansion(claim('3Gi', '1Gi', { status: { allocatedResources: { storage: '2Gi' }, allocatedResourceStatuses: { storage: 'NodeResizePending' } } }), DRIVER)).toBe(true);
  });
});

describe('watch restarts back off', () => {
  it('1 s doubling to 2 min', () => {
    expect([1, 2, 3, 8, 50].map(watchBackoffMs)).toEqual([1000, 2000, 4000, 120_000, 120_000]);
  });
});
