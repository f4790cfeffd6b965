// The volume capability the attacher and the resizer send for a PV: all of its access modes
// as one CSI mode (as the kubernetes-csi sidecars map them), sent to the real driver's
// controller service (over a FakeBackend, which serves every node).
import { afterEach, describe, expect, it } from 'vitest';
import type * as k8s from '@kubernetes/client-node';
import { combinedAccessMode, pvVolumeCapability, volumeCapabilities } from '../../sidecars/common/capability.js';
import { publishRequest } from '../../sidecars/attacher/attacher.js';
import { expandRequest } from '../../sidecars/resizer/resizer.js';
import { codeName } from '../../sidecars/common/csi-client.js';
import { startServices, type ServiceHarness } from './service-harness.js';

let h: ServiceHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const pvSpec = (accessModes: string[], extra: Partial<k8s.V1PersistentVolumeSpec> = {}): k8s.V1PersistentVolumeSpec => ({
  accessModes,
  csi: { driver: 'csi.test', volumeHandle: 'unset', fsType: 'ext4' },
  mountOptions: ['noatime'],
  ...extra,
});

/** A volume on the real controller service that any of the given modes may use, and its PV spec. */
async function volumeFor(accessModes: string[], extra: Partial<k8s.V1PersistentVolumeSpec> = {}) {
  h = await startServices();
  const spec = pvSpec(accessModes, extra);
  const block = spec.volumeMode === 'Block';
  const created = await h.client.Controller.CreateVolume({ name: `pv-${accessModes.join('-')}`, volume_capabilities: volumeCapabilities(accessModes, block, block ? '' : 'ext4', []) });
  spec.csi!.volumeHandle = created.volume.volume_id;
  return spec;
}

describe('combinedAccessMode', () => {
  it.each([
    [['ReadWriteOnce'], 'SINGLE_NODE_MULTI_WRITER'],
    [['ReadWriteOncePod'], 'SINGLE_NODE_SINGLE_WRITER'],
    [['ReadOnlyMany'], 'MULTI_NODE_READER_ONLY'],
    [['ReadWriteMany'], 'MULTI_NODE_MULTI_WRITER'],
    [['ReadWriteOnce', 'ReadWriteMany'], 'MULTI_NODE_MULTI_WRITER'],
    [['ReadOnlyMany', 'ReadWriteMany'], 'MULTI_NODE_MULTI_WRITER'],
    [['ReadWriteOnce', 'ReadWriteOnce'], 'SINGLE_NODE_MULTI_WRITER'],
  ])('%j -> %s', (modes, mode) => {
    expect(combinedAccessMode(modes)).toBe(mode);
  });

  it('refuses what CSI cannot say', () => {
    expect(() => combinedAccessMode(['ReadWriteOnce', 'ReadOnlyMany'])).toThrow(/ReadOnlyMany and ReadWriteOnce/);
    expect(() => combinedAccessMode(['ReadWriteOncePod', 'ReadWriteOnce'])).toThrow(/ReadWriteOncePod/);
    expect(() => combinedAccessMode([])).toThrow(/unsupported/);
    expect(() => combinedAccessMode(['Sometimes'])).toThrow(/unsupported/);
  });

  it('a PV without access modes is ReadWriteOnce; block and mount as the PV says', () => {
    expect(pvVolumeCapability({ csi: { driver: 'd', volumeHandle: 'v', fsType: 'xfs' }, mountOptions: ['ro'] })).toEqual({
      mount: { fs_type: 'xfs', mount_flags: ['ro'] },
      access_mode: { mode: 'SINGLE_NODE_MULTI_WRITER' },
    });
    expect(pvVolumeCapability({ volumeMode: 'Block', accessModes: ['ReadWriteMany'], csi: { driver: 'd', volumeHandle: 'v' } })).toEqual({
      block: {},
      access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' },
    });
  });
});

describe('attacher: ControllerPublishVolume of a PV', () => {
  it('publishes a ReadWriteOnce+ReadWriteMany PV on two nodes (its first mode alone would pin it to one)', async () => {
    const spec = await volumeFor(['ReadWriteOnce', 'ReadWriteMany']);
    for (const node of ['node-a', 'node-b']) await h!.client.Controller.ControllerPublishVolume(publishRequest(spec, node, {}));
    expect(publishRequest(spec, 'node-a', {}).volume_capability.access_mode.mode).toBe('MULTI_NODE_MULTI_WRITER');
    const vol = await h!.client.Controller.ControllerGetVolume({ volume_id: spec.csi!.volumeHandle });
    expect([...vol.status.published_node_ids].sort()).toEqual(['node-a', 'node-b']);
  });

  it('a ReadWriteOnce PV stays on one node: the driver refuses the second', async () => {
    const spec = await volumeFor(['ReadWriteOnce']);
    await h!.client.Controller.ControllerPublishVolume(publishRequest(spec, 'node-a', {}));
    const err = await h!.client.Controller.ControllerPublishVolume(publishRequest(spec, 'node-b', {})).catch((e: unknown) => e);
    expect(codeName(err)).toBe('FAILED_PRECONDITION');
  });
});

describe('resizer: ControllerExpandVolume of a PV', () => {
  it.each([
    [['ReadWriteMany'], 'MULTI_NODE_MULTI_WRITER'],
    [['ReadOnlyMany'], 'MULTI_NODE_READER_ONLY'],
    [['ReadWriteOncePod'], 'SINGLE_NODE_SINGLE_WRITER'],
  ])('sends the capability of a %j PV, not a fixed one', async (modes, mode) => {
    const spec = await volumeFor(modes, { volumeMode: 'Block' });
    const req = expandRequest(spec, 2n << 30n, {});
    expect(req.volume_capability).toEqual({ block: {}, access_mode: { mode } });
    const res = await h!.client.Controller.ControllerExpandVolume(req);
    expect(BigInt(res.capacity_bytes)).toBeGreaterThanOrEqual(2n << 30n);
  });
});
