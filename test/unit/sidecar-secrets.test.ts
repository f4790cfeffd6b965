// CSI secret references from StorageClass parameters, resolved as external-provisioner does.
import { describe, it, expect } from 'vitest';
import { secretRef, driverParameters } from '../../sidecars/common/secrets.js';

const P = 'csi.storage.k8s.io/';
const claim = { name: 'data', namespace: 'team-a', annotations: { 'example.com/key': 'from-annotation' } };

describe('secret references', () => {
  it('resolves ${pv.name}, ${pvc.name}, ${pvc.namespace} and annotations where allowed', () => {
    const params = {
      [`${P}node-stage-secret-name`]: "${pvc.name}-${pvc.annotations['example.com/key']}",
      [`${P}node-stage-secret-namespace`]: '${pvc.namespace}',
      [`${P}provisioner-secret-name`]: '${pv.name}',
      [`${P}provisioner-secret-namespace`]: 'ceph',
    };
    expect(secretRef('node-stage', params, 'pvc-1', claim)).toEqual({ name: 'data-from-annotation', namespace: 'team-a' });
    expect(secretRef('provisioner', params, 'pvc-1', claim)).toEqual({ name: 'pvc-1', namespace: 'ceph' });
  });

  it('the provisioner secret may not use claim annotations, no namespace may use the claim name', () => {
    expect(() => secretRef('provisioner', { [`${P}provisioner-secret-name`]: "${pvc.annotations['example.com/key']}", [`${P}provisioner-secret-namespace`]: 'x' }, 'pvc-1', claim)).toThrow(/invalid tokens/);
    expect(() => secretRef('node-stage', { [`${P}node-stage-secret-name`]: 'x', [`${P}node-stage-secret-namespace`]: '${pvc.name}' }, 'pvc-1', claim)).toThrow(/invalid tokens/);
  });

  it('falls back to csi.storage.k8s.io/secret-name/-namespace; none: undefined', () => {
    const params = { [`${P}secret-name`]: 's', [`${P}secret-namespace`]: 'n' };
    expect(secretRef('controller-expand', params, 'pvc-1', claim)).toEqual({ name: 's', namespace: 'n' });
    expect(secretRef('controller-expand', {}, 'pvc-1', claim)).toBeUndefined();
  });

  it('refuses half a reference and names that are not valid', () => {
    expect(() => secretRef('node-stage', { [`${P}node-stage-secret-name`]: 's' }, 'pvc-1', claim)).toThrow(/both/);
    expect(() => secretRef('node-stage', { [`${P}node-stage-secret-name`]: 'Bad_Name', [`${P}node-stage-secret-namespace`]: 'n' }, 'pvc-1', claim)).toThrow(/not a valid Secret name/);
    expect(() => secretRef('node-stage', { [`${P}node-stage-secret-name`]: 's', [`${P}node-stage-secret-namespace`]: 'a.b' }, 'pvc-1', claim)).toThrow(/not a valid namespace/);
  });
});

describe('parameters sent to the driver', () => {
  it('strips the CO\'s keys and refuses unknown ones under its prefix', () => {
    expect(
      driverParameters({ backend: 'rbd', pool: 'p', [`${P}fstype`]: 'ext4', [`${P}node-stage-secret-name`]: 's', [`${P}node-stage-secret-namespace`]: 'n', [`${P}secret-name`]: 's' }),
    ).toEqual({ backend: 'rbd', pool: 'p' });
    expect(() => driverParameters({ [`${P}node-stage-secret-nmae`]: 's' })).toThrow(/unknown parameter key/);
  });
});
