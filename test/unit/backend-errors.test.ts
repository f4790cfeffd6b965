// Every refusal of a backend reaches the CO with the gRPC code the spec prescribes, whichever
// RPC and whichever backend call it comes from: Controller, Node and GroupController run
// for real behind the real gRPC server; only the backend is a fake that throws on demand.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import path from 'node:path';
import { BackendError, type VolumeRecord, type SnapshotRecord } from '../../driver/backends/backend.js';
import { deriveId } from '../../driver/ids.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { fakeVolume, type BackendMethod } from './fake-backend.js';
import { startServices, type ServiceHarness } from './service-harness.js';

const KINDS = [
  ['not-found', 'NOT_FOUND'],
  ['exhausted', 'RESOURCE_EXHAUSTED'],
  ['precondition', 'FAILED_PRECONDITION'],
  ['invalid', 'INVALID_ARGUMENT'],
  ['unsupported', 'UNIMPLEMENTED'],
] as const;

const VOL = deriveId('vol', 'fake', 'existing');
const SNAP = deriveId('snap', 'fake', 'existing-snap');
const GROUP = deriveId('group', 'fake', 'existing-group');
const mountCap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const blockCap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

function volume(published: VolumeRecord['published'] = {}): VolumeRecord {
  return fakeVolume({ id: VOL, name: 'existing', published });
}

function snapshot(groupSnapshotId = ''): SnapshotRecord {
  return { id: SNAP, name: 'existing-snap', sourceVolumeId: VOL, sizeBytes: 1n << 30n, createdAtSeconds: 1n, createdAtNanos: 0, groupSnapshotId, parameters: {} };
}

type Service = 'Controller' | 'Node' | 'GroupController';
interface Case {
  service: Service;
  rpc: string;
  /** Every backend method the RPC reaches; each is made to fail in turn. */
  methods: BackendMethod[];
  req: (h: ServiceHarness) => object;
  setup?: (h: ServiceHarness) => Promise<void>;
}

const staged = async (h: ServiceHarness) => {
  await h.state.put({
    volumeId: VOL,
    stagingPath: path.join(h.dir, 'staging'),
    accessType: 'mount',
    fsType: 'ext4',
    mountFlags: [],
    mode: 'SINGLE_NODE_WRITER',
    publications: { [path.join(h.dir, 'target')]: { readonly: false, mode: 'SINGLE_NODE_WRITER' } },
  });
};

const CASES: Case[] = [
  { service: 'Controller', rpc: 'CreateVolume', methods: ['granularity', 'getVolume', 'capacity', 'createVolume'], req: () => ({ name: 'new', volume_capabilities: [mountCap] }) },
  {
    service: 'Controller',
    rpc: 'CreateVolume',
    methods: ['getSnapshot'],
    req: () => ({ name: 'restored', volume_capabilities: [mountCap], volume_content_source: { snapshot: { snapshot_id: SNAP } } }),
  },
  { service: 'Controller', rpc: 'CreateVolume', methods: ['getVolume'], req: () => ({ name: 'clone', volume_capabilities: [mountCap], volume_content_source: { volume: { volume_id: VOL } } }) },
  { service: 'Controller', rpc: 'DeleteVolume', methods: ['getVolume', 'deleteVolume'], req: () => ({ volume_id: VOL }) },
  {
    service: 'Controller',
    rpc: 'ControllerPublishVolume',
    methods: ['getVolume', 'knowsNode', 'listVolumes', 'saveVolume'],
    req: () => ({ volume_id: VOL, node_id: 'n1', volume_capability: mountCap }),
  },
  {
    service: 'Controller',
    rpc: 'ControllerUnpublishVolume',
    methods: ['getVolume', 'saveVolume'],
    req: () => ({ volume_id: VOL, node_id: 'n1' }),
    setup: async (h) => void h.backend.vols.set(VOL, volume({ n1: { readonly: false, accessMode: 'SINGLE_NODE_WRITER' } })),
  },
  { service: 'Controller', rpc: 'ValidateVolumeCapabilities', methods: ['getVolume'], req: () => ({ volume_id: VOL, volume_capabilities: [mountCap] }) },
  { service: 'Controller', rpc: 'ListVolumes', methods: ['listVolumes'], req: () => ({}) },
  { service: 'Controller', rpc: 'ControllerListVolumeHealth', methods: ['listVolumes', 'volumeHealth'], req: () => ({}) },
  { service: 'Controller', rpc: 'ControllerGetVolumeHealth', methods: ['getVolume', 'volumeHealth'], req: () => ({ volume_id: VOL }) },
  { service: 'Controller', rpc: 'GetCapacity', methods: ['capacity'], req: () => ({}) },
  { service: 'Controller', rpc: 'CreateSnapshot', methods: ['getSnapshot', 'getVolume', 'createSnapshots'], req: () => ({ name: 'new-snap', source_volume_id: VOL }) },
  {
    service: 'Controller',
    rpc: 'DeleteSnapshot',
    methods: ['getSnapshot', 'getGroupSnapshot', 'deleteSnapshot'],
    req: () => ({ snapshot_id: SNAP }),
    setup: async (h) => void h.backend.snaps.set(SNAP, snapshot(deriveId('group', 'fake', 'gone-group'))),
  },
  { service: 'Controller', rpc: 'ListSnapshots', methods: ['listSnapshots'], req: () => ({}) },
  { service: 'Controller', rpc: 'ListSnapshots', methods: ['getSnapshot'], req: () => ({ snapshot_id: SNAP }) },
  { service: 'Controller', rpc: 'GetSnapshot', methods: ['getSnapshot'], req: () => ({ snapshot_id: SNAP }) },
  {
    service: 'Controller',
    rpc: 'ControllerExpandVolume',
    methods: ['getVolume', 'granularity', 'capacity', 'expandVolume'],
    req: () => ({ volume_id: VOL, capacity_range: { required_bytes: String(2n << 30n) } }),
  },
  { service: 'Controller', rpc: 'ControllerGetVolume', methods: ['getVolume'], req: () => ({ volume_id: VOL }) },
  { service: 'Controller', rpc: 'ControllerModifyVolume', methods: ['getVolume', 'saveVolume'], req: () => ({ volume_id: VOL, mutable_parameters: { speed: 'fast' } }) },
  {
    service: 'GroupController',
    rpc: 'CreateVolumeGroupSnapshot',
    methods: ['getGroupSnapshot', 'getVolume', 'getSnapshot', 'createSnapshots', 'saveGroupSnapshot'],
    req: () => ({ name: 'new-group', source_volume_ids: [VOL] }),
  },
  {
    service: 'GroupController',
    rpc: 'GetVolumeGroupSnapshot',
    methods: ['getGroupSnapshot', 'getSnapshot'],
    req: () => ({ group_snapshot_id: GROUP }),
    setup: async (h) => {
      h.backend.snaps.set(SNAP, snapshot(GROUP));
      h.backend.groups.set(GROUP, { id: GROUP, name: 'existing-group', snapshotIds: [SNAP], createdAtSeconds: 1n, createdAtNanos: 0, parameters: {} });
    },
  },
  {
    service: 'GroupController',
    rpc: 'DeleteVolumeGroupSnapshot',
    methods: ['getGroupSnapshot', 'deleteSnapshot', 'deleteGroupSnapshotRecord'],
    req: () => ({ group_snapshot_id: GROUP }),
    setup: async (h) => {
      h.backend.snaps.set(SNAP, snapshot(GROUP));
      h.backend.groups.set(GROUP, { id: GROUP, name: 'existing-group', snapshotIds: [SNAP], createdAtSeconds: 1n, createdAtNanos: 0, parameters: {} });
    },
  },
  {
    service: 'Node',
    rpc: 'NodeStageVolume',
    methods: ['getVolume', 'attach'],
    req: (h) => ({ volume_id: VOL, staging_target_path: path.join(h.dir, 'staging'), volume_capability: blockCap }),
    setup: async (h) => void h.backend.vols.set(VOL, { ...volume(), accessType: 'block', fsType: '' }),
  },
  {
    service: 'Node',
    rpc: 'NodeUnstageVolume',
    methods: ['getVolume', 'attachedDevice', 'detach'],
    req: (h) => ({ volume_id: VOL, staging_target_path: path.join(h.dir, 'staging') }),
    setup: async (h) => {
      await staged(h);
      const st = (await h.state.get(VOL))!;
      await h.state.put({ ...st, publications: {} });
    },
  },
  {
    service: 'Node',
    rpc: 'NodePublishVolume',
    methods: ['getVolume', 'attachedDevice'],
    req: (h) => ({ volume_id: VOL, staging_target_path: path.join(h.dir, 'staging'), target_path: path.join(h.dir, 'target2'), volume_capability: mountCap }),
    setup: staged,
  },
  { service: 'Node', rpc: 'NodeUnpublishVolume', methods: ['getVolume', 'attachedDevice'], req: (h) => ({ volume_id: VOL, target_path: path.join(h.dir, 'target') }), setup: staged },
  {
    service: 'Node',
    rpc: 'NodeGetVolumeStats',
    methods: ['getVolume', 'attachedDevice'],
    req: (h) => ({ volume_id: VOL, volume_path: path.join(h.dir, 'staging') }),
    setup: staged,
  },
  { service: 'Node', rpc: 'NodeGetVolumeHealth', methods: ['getVolume', 'volumeHealth', 'attachedDevice'], req: () => ({ volume_id: VOL }), setup: staged },
  {
    service: 'Node',
    rpc: 'NodeExpandVolume',
    methods: ['getVolume', 'attachedDevice', 'refreshDevice'],
    req: (h) => ({ volume_id: VOL, volume_path: path.join(h.dir, 'staging') }),
    setup: staged,
  },
];

const table = CASES.flatMap((c) => c.methods.flatMap((m) => KINDS.map(([kind, code]) => [`${c.service}.${c.rpc}`, m, kind, code, c] as const)));

describe('a BackendError reaches the CO with its gRPC code', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await startServices();
  });
  afterAll(async () => {
    await h?.close();
  });
  beforeEach(async () => {
    h.backend.fail = undefined;
    h.backend.vols.clear();
    h.backend.snaps.clear();
    h.backend.groups.clear();
    h.backend.vols.set(VOL, volume());
    h.backend.snaps.set(SNAP, snapshot());
    for (const s of await h.state.all()) await h.state.remove(s.volumeId);
  });

  it.each(table)('%s: %s throws %s -> %s', async (_rpc, method, kind, code, c) => {
    await c.setup?.(h);
    h.backend.fail = { method, error: new BackendError(kind, `fake ${method} refused (${kind})`) };
    const err = await h.client[c.service][c.rpc](c.req(h)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, `${c.rpc} answered OK although ${method} threw`).toBeDefined();
    expect(codeName(err)).toBe(code);
    // The message is the backend's, so a person can act on it.
    expect((err as Error).message).toContain(`fake ${method} refused (${kind})`);
  });

  it('an error that is not a BackendError is INTERNAL and names what failed', async () => {
    h.backend.fail = { method: 'getVolume', error: new Error('disk on fire') };
    const err = await h.client.Controller.ControllerGetVolume({ volume_id: VOL }).catch((e: unknown) => e);
    expect(codeName(err)).toBe('INTERNAL');
    expect((err as Error).message).toContain('disk on fire');
  });
});
