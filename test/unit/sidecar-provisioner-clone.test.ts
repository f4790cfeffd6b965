// A claim cloned from another claim: the checks external-provisioner makes before asking the
// driver for a clone (pure decisions on the two claims and the source's PV).
import { describe, it, expect } from 'vitest';
import { cloneSourceProblem, crossNamespaceProblem } from '../../sidecars/provisioner/clone.js';
import { derivedVolumeId } from '../../sidecars/common/scope.js';

const DRIVER = 'csi.tscsi.dev';
const claim = (size: string, extra: { volumeMode?: string; namespace?: string } = {}) => ({
  metadata: { name: 'copy', namespace: extra.namespace ?? 'ns' },
  spec: { resources: { requests: { storage: size } }, ...(extra.volumeMode ? { volumeMode: extra.volumeMode } : {}) },
});
const source = (over: { phase?: string; volumeName?: string; deleting?: boolean; volumeMode?: string; size?: string } = {}) => ({
  metadata: { name: 'orig', namespace: 'ns', ...(over.deleting ? { deletionTimestamp: new Date() } : {}) },
  spec: {
    volumeName: 'volumeName' in over ? over.volumeName : 'pv-orig',
    resources: { requests: { storage: over.size ?? '64Mi' } },
    ...(over.volumeMode ? { volumeMode: over.volumeMode } : {}),
  },
  status: { phase: over.phase ?? 'Bound' },
});
const sourcePv = (size = '64Mi', backend = 'loop', driver = DRIVER) => ({ metadata: { name: 'pv-orig' }, spec: { capacity: { storage: size }, csi: { driver, volumeHandle: derivedVolumeId(backend, 'pvc-orig') } } });
const target = (c = claim('64Mi'), backend = 'loop') => ({ claim: c, backend, driverName: DRIVER });

describe('cloning a claim', () => {
  it('accepts a bound source of the same driver and backend, as large or smaller, of the same mode', () => {
    expect(cloneSourceProblem(target(), source(), sourcePv())).toBeUndefined();
    expect(cloneSourceProblem(target(claim('1Gi')), source(), sourcePv())).toBeUndefined();
    expect(cloneSourceProblem(target(claim('64Mi', { volumeMode: 'Block' })), source({ volumeMode: 'Block' }), sourcePv())).toBeUndefined();
    // no mode written is Filesystem on both sides
    expect(cloneSourceProblem(target(claim('64Mi', { volumeMode: 'Filesystem' })), source(), sourcePv())).toBeUndefined();
  });

  it('refuses a source in another namespace (no ReferenceGrant support), naming both namespaces', () => {
    const c = claim('64Mi');
    expect(crossNamespaceProblem(c, { kind: 'PersistentVolumeClaim', name: 'orig' })).toBeUndefined();
    expect(crossNamespaceProblem(c, { kind: 'PersistentVolumeClaim', name: 'orig', namespace: 'ns' })).toBeUndefined();
    expect(crossNamespaceProblem(c, { kind: 'PersistentVolumeClaim', name: 'orig', namespace: 'other' })).toBe(
      'data source PersistentVolumeClaim other/orig is in another namespace than the claim (ns): cross-namespace data sources (ReferenceGrant) are not supported; copy the source into namespace ns',
    );
  });

  it('refuses a source not bound yet, being deleted, or whose PV is missing', () => {
    expect(cloneSourceProblem(target(), source({ phase: 'Pending', volumeName: undefined }), undefined)).toBe('source claim ns/orig is not bound to a volume yet (phase Pending); the clone is made once it is');
    expect(cloneSourceProblem(target(), source({ deleting: true }), sourcePv())).toBe('source claim ns/orig is being deleted');
    expect(cloneSourceProblem(target(), source(), undefined)).toBe('source claim ns/orig is bound to PersistentVolume pv-orig, which does not exist');
  });

  it("refuses another driver's volume and another backend's", () => {
    expect(cloneSourceProblem(target(), source(), sourcePv('64Mi', 'loop', 'other.csi.io'))).toBe(
      'source claim ns/orig is a volume of driver other.csi.io, not of csi.tscsi.dev: only volumes of the same driver can be cloned',
    );
    expect(cloneSourceProblem(target(claim('64Mi'), 'lvm'), source(), sourcePv('64Mi', 'loop'))).toBe(
      "source claim ns/orig is a loop volume and the claim's StorageClass provisions on lvm: a clone stays on its source's backend",
    );
  });

  it('accepts a claim asking what the source claim asked, though its PV was rounded up', () => {
    // 1G (10^9 bytes) is stored as a whole number of MiB: the PV says more than the claim asked
    expect(cloneSourceProblem(target(claim('1G')), source({ size: '1G' }), sourcePv('954Mi'))).toBeUndefined();
  });

  it('refuses a claim smaller than the source claim, in bytes', () => {
    expect(cloneSourceProblem(target(claim('32Mi')), source(), sourcePv('64Mi'))).toBe(
      `requested volume size ${32 * 2 ** 20} is less than the size ${64 * 2 ** 20} of the source claim ns/orig: a clone must be at least as large as its source`,
    );
  });

  it('refuses another volume mode', () => {
    expect(cloneSourceProblem(target(claim('64Mi', { volumeMode: 'Block' })), source(), sourcePv())).toBe(
      "the claim's volume mode Block differs from the source claim ns/orig's Filesystem: a clone keeps its source's volume mode",
    );
  });
});
