// Which VolumeSnapshotContents a per-node snapshotter takes (sidecars/snapshotter/node-scope.ts):
// the node recorded on the content first, then the source volume's PV by node affinity, and
// only for what neither says (pre-provisioned contents, volumes whose PV is gone) the driver.
import { describe, it, expect } from 'vitest';
import { ownership, nodeAnnotation } from '../../sidecars/snapshotter/node-scope.js';
import type { VolumeSnapshotContent } from '../../sidecars/snapshotter/content.js';

const DRIVER = 'csi.tscsi.dev';
const VOL = 'vol-loop-0123456789abcdef0123456789abcdef';
const pinnedTo = (node: string) => ({
  metadata: { name: 'pv-1' },
  spec: { csi: { driver: DRIVER, volumeHandle: VOL }, nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.tscsi.dev/node', operator: 'In', values: [node] }] }] } } },
});
const content = (source: { volumeHandle?: string; snapshotHandle?: string }, node?: string): VolumeSnapshotContent => ({
  metadata: { name: 'snapcontent-1', annotations: node ? { [nodeAnnotation(DRIVER)]: node } : {} },
  spec: { driver: DRIVER, source },
});

describe('which node snapshots a content', () => {
  it('a dynamic content: the node its source volume is pinned to, and no other', () => {
    const pvs = (h: string) => (h === VOL ? pinnedTo('node-a') : undefined);
    expect(ownership(content({ volumeHandle: VOL }), DRIVER, 'node-a', pvs)).toBe('mine');
    expect(ownership(content({ volumeHandle: VOL }), DRIVER, 'node-b', pvs)).toBe('other');
  });

  it('the node written on the content decides, even when the volume is gone or would say otherwise', () => {
    expect(ownership(content({ volumeHandle: VOL }, 'node-a'), DRIVER, 'node-a', () => undefined)).toBe('mine');
    expect(ownership(content({ volumeHandle: VOL }, 'node-a'), DRIVER, 'node-b', () => pinnedTo('node-b'))).toBe('other');
    expect(ownership(content({ snapshotHandle: 'snap-loop-0123456789abcdef0123456789abcdef' }, 'node-b'), DRIVER, 'node-b', () => undefined)).toBe('mine');
  });

  it('a pre-provisioned content, or one whose volume has no PV any more: the driver is asked', () => {
    expect(ownership(content({ snapshotHandle: 'snap-loop-0123456789abcdef0123456789abcdef' }), DRIVER, 'node-a', () => pinnedTo('node-a'))).toBe('ask-driver');
    expect(ownership(content({ volumeHandle: VOL }), DRIVER, 'node-a', () => undefined)).toBe('ask-driver');
  });

  it('a PV without node affinity is no single node\'s', () => {
    const loose = { metadata: { name: 'pv-1' }, spec: { csi: { driver: DRIVER, volumeHandle: VOL } } };
    expect(ownership(content({ volumeHandle: VOL }), DRIVER, 'node-a', () => loose)).toBe('other');
  });
});
