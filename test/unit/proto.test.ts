import { describe, it, expect } from 'vitest';
import { loadCsi } from '../../proto/load.js';
import { checkCapability } from '../../driver/validate.js';

// The RPCs of CSI v1.13, per service.
const RPCS: Record<string, string[]> = {
  Identity: ['GetPluginInfo', 'GetPluginCapabilities', 'Probe'],
  Controller: [
    'CreateVolume',
    'DeleteVolume',
    'ControllerPublishVolume',
    'ControllerUnpublishVolume',
    'ValidateVolumeCapabilities',
    'ListVolumes',
    'GetCapacity',
    'ControllerGetCapabilities',
    'CreateSnapshot',
    'DeleteSnapshot',
    'ListSnapshots',
    'ControllerExpandVolume',
    'ControllerGetVolume',
    'ControllerModifyVolume',
    'GetSnapshot',
    'ControllerListVolumeHealth',
    'ControllerGetVolumeHealth',
  ],
  Node: [
    'NodeStageVolume',
    'NodeUnstageVolume',
    'NodePublishVolume',
    'NodeUnpublishVolume',
    'NodeGetVolumeStats',
    'NodeGetVolumeHealth',
    'NodeGetStorageHealth',
    'NodeExpandVolume',
    'NodeGetCapabilities',
    'NodeGetInfo',
  ],
  GroupController: ['GroupControllerGetCapabilities', 'CreateVolumeGroupSnapshot', 'DeleteVolumeGroupSnapshot', 'GetVolumeGroupSnapshot'],
  SnapshotMetadata: ['GetMetadataAllocated', 'GetMetadataDelta'],
};

const v1 = (): any => loadCsi().csi.v1;

describe('proto/load loadCsi', () => {
  it('returns the same cached definition on each call', () => {
    expect(loadCsi()).toBe(loadCsi());
  });

  it.each(Object.entries(RPCS))('service %s has exactly the CSI v1.13 RPCs', (svc, rpcs) => {
    const service = v1()[svc]?.service as Record<string, { path: string }> | undefined;
    expect(service, `csi.v1.${svc}`).toBeDefined();
    expect(Object.keys(service!).sort()).toEqual([...rpcs].sort());
    for (const rpc of rpcs) expect(service![rpc].path).toBe(`/csi.v1.${svc}/${rpc}`);
  });

  it('CreateVolumeResponse round-trips capacity_bytes = INT64_MAX without precision loss', () => {
    const def = v1().Controller.service.CreateVolume;
    const msg = { volume: { volume_id: 'vol-loop-x', capacity_bytes: '9223372036854775807', volume_context: { a: 'b' } } };
    const wire: Buffer = def.responseSerialize(msg);
    expect(Buffer.isBuffer(wire)).toBe(true);
    const back = def.responseDeserialize(wire);
    expect(back.volume.capacity_bytes).toBe('9223372036854775807');
    expect(back.volume.volume_id).toBe('vol-loop-x');
    expect(back.volume.volume_context).toEqual({ a: 'b' });
  });

  it('int64 request fields arrive as decimal strings (2^53 + 1 stays exact)', () => {
    const def = v1().Controller.service.CreateVolume;
    const req = { name: 'pvc-1', capacity_range: { required_bytes: '9007199254740993', limit_bytes: '9223372036854775807' } };
    const back = def.requestDeserialize(def.requestSerialize(req));
    expect(back.capacity_range).toMatchObject({ required_bytes: '9007199254740993', limit_bytes: '9223372036854775807' });
  });

  it('unset fields arrive with proto3 defaults and enums as names', () => {
    const def = v1().Controller.service.CreateVolume;
    const back = def.requestDeserialize(def.requestSerialize({ name: 'pvc-1', volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }] }));
    expect(back.secrets).toEqual({});
    expect(back.parameters).toEqual({});
    expect(back.capacity_range).toBeNull();
    expect(back.volume_capabilities[0].access_mode.mode).toBe('SINGLE_NODE_WRITER');
    expect(back.volume_capabilities[0].access_type).toBe('block');
    expect(back.volume_capabilities[0].mount ?? null).toBeNull();
  });

  it('deserialized capabilities have the shape validate.checkCapability expects', () => {
    const def = v1().Controller.service.CreateVolume;
    const back = def.requestDeserialize(
      def.requestSerialize({
        name: 'pvc-1',
        volume_capabilities: [
          { mount: { fs_type: 'xfs', mount_flags: ['noatime'] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
          { access_mode: { mode: 'SINGLE_NODE_WRITER' } },
        ],
      }),
    );
    expect(checkCapability(back.volume_capabilities[0])).toEqual({ accessType: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'xfs', mountFlags: ['noatime'] });
    expect(() => checkCapability(back.volume_capabilities[1])).toThrow(/access_type must be mount or block/);
  });
});
