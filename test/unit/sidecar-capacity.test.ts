// The provisioner's capacity tracking, its pure decisions: which (class, segment) pairs get a
// CSIStorageCapacity, what to create, update and delete to match GetCapacity's answers, the
// managed-by label, and which CreateVolume failures send a claim back to the scheduler.
// The objects on a real API server: test/e2e/capacity.test.ts.
import { describe, it, expect } from 'vitest';
import { status } from '@grpc/grpc-js';
import { desiredItems, planCapacity, managedById, capacityObject, segmentOfObject, type CapacityItem, type CapacityAnswer } from '../../sidecars/provisioner/capacity.js';
import { mayReschedule } from '../../sidecars/provisioner/reschedule.js';
import { createLogger } from '../../lib/process.js';
import type { CommonControllerOptions } from '../../sidecars/common/run.js';
import type { k8s } from '../../sidecars/common/kube.js';

const DRIVER = 'csi.tscsi.dev';
const KEY = 'topology.tscsi.dev/node';
const log = createLogger('test');
const nodeScope: CommonControllerOptions = { driverName: DRIVER, backends: new Set(['loop', 'lvm']), defaultBackend: 'loop', nodeName: 'n1', workers: 1, timeoutMs: 1000, log };
const sc = (name: string, extra: Partial<k8s.V1StorageClass> = {}): k8s.V1StorageClass => ({ metadata: { name }, provisioner: DRIVER, volumeBindingMode: 'WaitForFirstConsumer', ...extra });
const GiB = 1n << 30n;

describe('which classes and segments get a capacity object', () => {
  const classes = [
    sc('loop-wffc', { parameters: { 'csi.storage.k8s.io/fstype': 'xfs', directIO: 'false' } }),
    sc('lvm-wffc', { parameters: { backend: 'lvm', volumeGroup: 'vg' } }),
    sc('loop-immediate', { volumeBindingMode: 'Immediate' }),
    sc('default-binding', { volumeBindingMode: undefined }),
    sc('rbd-wffc', { parameters: { backend: 'rbd' } }),
    sc('other-driver', { provisioner: 'other.csi' }),
    sc('bad-co-key', { parameters: { 'csi.storage.k8s.io/nonsense': 'x' } }),
  ];
  const segs = [{ [KEY]: 'n1' }];

  it('WaitForFirstConsumer classes of the backends served, with their parameters minus the CO\'s keys', () => {
    const items = desiredItems(classes, segs, nodeScope, false);
    expect(items.map((i) => i.storageClassName)).toEqual(['loop-wffc', 'lvm-wffc']);
    expect(items[0]).toEqual({ storageClassName: 'loop-wffc', segment: { [KEY]: 'n1' }, parameters: { directIO: 'false' } });
  });

  it('Immediate classes (and those without a mode: Immediate is the default) only when asked', () => {
    expect(desiredItems(classes, segs, nodeScope, true).map((i) => i.storageClassName)).toEqual(['loop-wffc', 'lvm-wffc', 'loop-immediate', 'default-binding']);
  });

  it('one item per segment; none without segments', () => {
    const central = { ...nodeScope, nodeName: undefined, backends: undefined };
    const two = desiredItems([classes[0]!], [{ [KEY]: 'n1' }, { [KEY]: 'n2' }], central, false);
    expect(two.map((i) => i.segment[KEY])).toEqual(['n1', 'n2']);
    expect(desiredItems(classes, [], nodeScope, false)).toEqual([]);
  });
});

describe('the managed-by label', () => {
  it('is external-provisioner\'s: plain centrally, with the node on a node', () => {
    expect(managedById(undefined)).toBe('external-provisioner');
    expect(managedById('worker-1')).toBe('external-provisioner-worker-1');
  });
  it('stays a valid label value for a long node name, and differs per node', () => {
    const a = managedById(`${'a'.repeat(60)}.example.com`);
    const b = managedById(`${'b'.repeat(60)}.example.com`);
    for (const v of [a, b]) expect(v).toMatch(/^external-provisioner-[0-9a-f]{16}$/);
    expect(a).not.toBe(b);
  });
});

describe('planning the objects', () => {
  const owner: k8s.V1OwnerReference = { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'tscsi-node', uid: 'uid-ds', controller: true };
  const item = (name: string, node = 'n1'): CapacityItem => ({ storageClassName: name, segment: { [KEY]: node }, parameters: {} });
  const obj = (name: string, cls: string, capacity: string, extra: Partial<k8s.V1CSIStorageCapacity> = {}, node = 'n1'): k8s.V1CSIStorageCapacity => ({
    metadata: { name, resourceVersion: '1', ownerReferences: [owner] },
    storageClassName: cls,
    nodeTopology: { matchLabels: { [KEY]: node } },
    capacity,
    maximumVolumeSize: capacity,
    ...extra,
  });
  const answer = (c: bigint, max: bigint | undefined = c): CapacityAnswer => ({ capacity: c, maximumVolumeSize: max });

  it('creates what is missing, with labels, owner, the segment as matchLabels, sizes as quantities', () => {
    const a = item('fast');
    const plan = planCapacity([a], new Map([[a, answer(10n * GiB, 4n * GiB)]]), [], owner);
    expect(plan.update).toEqual([]);
    expect(plan.remove).toEqual([]);
    expect(plan.create).toHaveLength(1);
    const o = capacityObject(plan.create[0]!.item, plan.create[0]!.answer, { l: 'v' }, owner);
    expect(o).toMatchObject({ metadata: { generateName: 'csisc-', labels: { l: 'v' }, ownerReferences: [owner] }, storageClassName: 'fast', nodeTopology: { matchLabels: { [KEY]: 'n1' } }, capacity: '10Gi', maximumVolumeSize: '4Gi' });
    expect(capacityObject(a, { capacity: 5n }, {}, undefined)).not.toHaveProperty('maximumVolumeSize');
  });

  it('leaves an object that says what GetCapacity said; updates one that does not', () => {
    const a = item('fast');
    expect(planCapacity([a], new Map([[a, answer(10n * GiB)]]), [obj('csisc-1', 'fast', '10Gi')], owner)).toEqual({ create: [], update: [], remove: [] });
    // the API server may write a quantity another way: bytes are compared
    expect(planCapacity([a], new Map([[a, answer(10n * GiB)]]), [obj('csisc-1', 'fast', '10737418240')], owner).update).toEqual([]);
    const changed = planCapacity([a], new Map([[a, answer(9n * GiB)]]), [obj('csisc-1', 'fast', '10Gi')], owner);
    expect(changed.update).toHaveLength(1);
    expect(changed.update[0]!.addOwner).toBe(false);
    const maxOnly = planCapacity([a], new Map([[a, answer(10n * GiB, 1n * GiB)]]), [obj('csisc-1', 'fast', '10Gi')], owner);
    expect(maxOnly.update).toHaveLength(1);
  });

  it('adds the owner to an object that lacks it (made by an earlier provisioner)', () => {
    const a = item('fast');
    const plan = planCapacity([a], new Map([[a, answer(10n * GiB)]]), [obj('csisc-1', 'fast', '10Gi', { metadata: { name: 'csisc-1' } })], owner);
    expect(plan.update.map((u) => u.addOwner)).toEqual([true]);
  });

  it('removes objects of classes or segments that are gone, duplicates and selectors it does not write', () => {
    const a = item('fast');
    const existing = [
      obj('csisc-1', 'fast', '10Gi'),
      obj('csisc-dup', 'fast', '10Gi'),
      obj('csisc-gone-class', 'deleted', '10Gi'),
      obj('csisc-gone-node', 'fast', '10Gi', {}, 'n2'),
      obj('csisc-expr', 'fast', '10Gi', { nodeTopology: { matchExpressions: [{ key: KEY, operator: 'In', values: ['n1'] }] } }),
    ];
    const plan = planCapacity([a], new Map([[a, answer(10n * GiB)]]), existing, owner);
    expect(plan.remove.map((o) => o.metadata!.name)).toEqual(['csisc-dup', 'csisc-gone-class', 'csisc-gone-node', 'csisc-expr']);
    expect(plan.create).toEqual([]);
    expect(plan.update).toEqual([]);
  });

  it('an item whose GetCapacity failed keeps its object as it is and is not created', () => {
    const [a, b] = [item('fast'), item('slow')];
    const plan = planCapacity([a, b], new Map(), [obj('csisc-1', 'fast', '10Gi')], owner);
    expect(plan).toEqual({ create: [], update: [], remove: [] });
  });

  it('segments are matched whatever the order of their keys', () => {
    const a: CapacityItem = { storageClassName: 'fast', segment: { a: '1', b: '2' }, parameters: {} };
    const o = obj('csisc-1', 'fast', '1Gi', { nodeTopology: { matchLabels: { b: '2', a: '1' } } });
    expect(segmentOfObject(o)).toEqual({ a: '1', b: '2' });
    expect(planCapacity([a], new Map([[a, answer(GiB)]]), [o], owner)).toEqual({ create: [], update: [], remove: [] });
  });
});

describe('which failed CreateVolume sends a claim back to the scheduler', () => {
  const grpcError = (code: number) => Object.assign(new Error('x'), { code, details: 'x' });
  it('RESOURCE_EXHAUSTED on a claim with a selected node only', () => {
    expect(mayReschedule(grpcError(status.RESOURCE_EXHAUSTED), 'n1')).toBe(true);
    expect(mayReschedule(grpcError(status.RESOURCE_EXHAUSTED), undefined)).toBe(false);
    for (const c of [status.INVALID_ARGUMENT, status.ABORTED, status.DEADLINE_EXCEEDED, status.INTERNAL]) expect(mayReschedule(grpcError(c), 'n1')).toBe(false);
    expect(mayReschedule(new Error('the claim requests no storage size'), 'n1')).toBe(false);
  });
});
