// Kubernetes access modes and volume modes as CSI volume capabilities, for every sidecar
// that sends one (CreateVolume, ControllerPublishVolume, ControllerExpandVolume). The
// mapping is the kubernetes-csi sidecars' for a driver that advertises
// SINGLE_NODE_MULTI_WRITER, as ours does.
import type { k8s } from './kube.js';

/** One Kubernetes access mode as CSI: what CreateVolume lists, one capability per mode of the claim. */
export function csiAccessMode(mode: string): string {
  switch (mode) {
    case 'ReadWriteOnce':
      return 'SINGLE_NODE_MULTI_WRITER';
    case 'ReadWriteOncePod':
      return 'SINGLE_NODE_SINGLE_WRITER';
    case 'ReadOnlyMany':
      return 'MULTI_NODE_READER_ONLY';
    case 'ReadWriteMany':
      return 'MULTI_NODE_MULTI_WRITER';
    default:
      throw new Error(`unknown access mode ${mode}`);
  }
}

/**
 * All of a PV's access modes as the ONE CSI mode a publish or an expansion carries: the
 * widest use the PV allows (ReadWriteMany over the rest), so a volume that may be written
 * on many nodes is never published as if it were single-node. Combinations CSI cannot say
 * are refused, as the kubernetes-csi sidecars refuse them.
 */
export function combinedAccessMode(modes: readonly string[]): string {
  const m = new Set(modes);
  if (m.has('ReadWriteOncePod')) {
    if (m.size > 1) throw new Error('Kubernetes does not support ReadWriteOncePod with other access modes on the same PersistentVolume');
    return 'SINGLE_NODE_SINGLE_WRITER';
  }
  if (m.has('ReadWriteMany')) return 'MULTI_NODE_MULTI_WRITER';
  if (m.has('ReadOnlyMany') && m.has('ReadWriteOnce')) throw new Error('CSI does not support ReadOnlyMany and ReadWriteOnce on the same PersistentVolume');
  if (m.has('ReadOnlyMany')) return 'MULTI_NODE_READER_ONLY';
  if (m.has('ReadWriteOnce')) return 'SINGLE_NODE_MULTI_WRITER';
  throw new Error(`unsupported access modes ${JSON.stringify(modes)}`);
}

interface AccessType {
  block: boolean;
  fsType: string;
  mountOptions: readonly string[];
}

function capability({ block, fsType, mountOptions }: AccessType, mode: string) {
  return { ...(block ? { block: {} } : { mount: { fs_type: fsType, mount_flags: [...mountOptions] } }), access_mode: { mode } };
}

/** CreateVolume's volume_capabilities: one per access mode the claim asks for. */
export function volumeCapabilities(modes: readonly string[], block: boolean, fsType: string, mountOptions: readonly string[]) {
  return modes.map((m) => capability({ block, fsType, mountOptions }, csiAccessMode(m)));
}

/** The volume_capability of a PV's ControllerPublishVolume and ControllerExpandVolume. */
export function pvVolumeCapability(spec: k8s.V1PersistentVolumeSpec) {
  const access = { block: spec.volumeMode === 'Block', fsType: spec.csi?.fsType ?? '', mountOptions: spec.mountOptions ?? [] };
  return capability(access, combinedAccessMode(spec.accessModes?.length ? spec.accessModes : ['ReadWriteOnce']));
}
