// Static checks of the manifests in deploy/ as kustomize renders them (kubectl kustomize):
// one image at the package's version, least privilege, the CSIDriver fields the issue fixes,
// the node plugin's paths. The real apply runs in test/e2e/deploy.test.ts.
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { KUBECTL } from '../lib/cluster-env.js';
import { USAGE } from '../../driver/config.js';
import { nodeAnnotation } from '../../sidecars/snapshotter/node-scope.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;

function render(dir: string): any[] {
  // plain JSON objects (loadAllYaml would build typed classes)
  return JSON.parse(JSON.stringify(k8s.loadAllYaml(execFileSync(KUBECTL, ['kustomize', path.join(DEPLOY, dir)], { encoding: 'utf8' }))));
}
const find = (objs: any[], kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);

// npm test builds the cluster's kubectl first (test/run-all) and names it in $KUBECTL: no skip.
describe('deploy/ manifests', () => {
  const objs = render('.');
  const ds = find(objs, 'DaemonSet', 'tscsi-node');
  const dep = find(objs, 'Deployment', 'tscsi-controller');
  const containers = [...(ds?.spec.template.spec.containers ?? []), ...(dep?.spec.template.spec.containers ?? [])];

  it('every container runs the one image at the package version, a program the entrypoint knows', () => {
    const entry = fs.readFileSync(path.join(DEPLOY, 'image', 'tscsi.mjs'), 'utf8');
    expect(containers.length).toBe(15);
    for (const c of containers) {
      expect(c.image).toBe(`tscsi.local/tscsi:${VERSION}`);
      expect(entry).toMatch(new RegExp(`^  '?${c.args[0]}'?: 'dist/`, 'm')); // a name with a dash is quoted
    }
  });

  it('the CSIDriver object', () => {
    expect(find(objs, 'CSIDriver', 'csi.tscsi.dev').spec).toMatchObject({
      attachRequired: true,
      podInfoOnMount: false,
      fsGroupPolicy: 'File',
      storageCapacity: true,
      volumeLifecycleModes: ['Persistent'],
    });
  });

  it('only the node driver container is privileged; it sees the kubelet dir at the same path, Bidirectional', () => {
    const privileged = containers.filter((c) => c.securityContext?.privileged).map((c) => c.name);
    expect(privileged).toEqual(['driver']);
    expect(ds.spec.template.spec.containers[0].securityContext.privileged).toBe(true);
    const driver = ds.spec.template.spec.containers.find((c: any) => c.name === 'driver');
    const vol = ds.spec.template.spec.volumes.find((v: any) => v.name === 'kubelet-dir');
    const mount = driver.volumeMounts.find((m: any) => m.name === 'kubelet-dir');
    expect(mount).toEqual({ name: 'kubelet-dir', mountPath: vol.hostPath.path, mountPropagation: 'Bidirectional' });
    const reg = ds.spec.template.spec.containers.find((c: any) => c.name === 'registrar');
    const regPath = reg.env.find((e: any) => e.name === 'KUBELET_REGISTRATION_PATH').value;
    const sockDir = ds.spec.template.spec.volumes.find((v: any) => v.name === 'socket-dir').hostPath.path;
    expect(regPath).toBe(`${sockDir}/csi.sock`);
    expect(ds.spec.template.spec.volumes.find((v: any) => v.name === 'registration-dir').hostPath.path).toBe(`${vol.hostPath.path}/plugins_registry`);
  });

  it('node-local backends: the node provisioner takes only its own node\'s claims; the controller is scaled to 0', () => {
    const prov = ds.spec.template.spec.containers.find((c: any) => c.name === 'provisioner');
    expect(prov.args).toContain('--node-name=$(NODE_NAME)');
    expect(prov.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    const driver = ds.spec.template.spec.containers.find((c: any) => c.name === 'driver');
    expect(driver.args).toContain('--mode=all');
    expect(driver.args).toContain('--node-id=$(NODE_NAME)');
    expect(dep.spec.replicas).toBe(0);
  });

  it('controller Deployment: every sidecar that writes to the API elects a leader, as the pod (POD_NAME), in the pod\'s namespace', () => {
    const byName = Object.fromEntries(dep.spec.template.spec.containers.map((c: any) => [c.name, c]));
    for (const name of ['provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor']) {
      expect(byName[name].args, name).toContain('--leader-election');
      expect(byName[name].env, name).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
      expect(byName[name].env, name).toContainEqual({ name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } });
    }
  });

  it('RBAC: no wildcards, no Secrets in the base, one service account per component, the node a role of its own', () => {
    for (const r of objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')) {
      for (const rule of r.rules) {
        expect(rule.verbs).not.toContain('*');
        expect(rule.resources).not.toContain('*');
        expect(rule.resources).not.toContain('secrets');
        if (!rule.resources.includes('leases')) expect(rule.verbs).not.toContain('update');
      }
    }
    expect(ds.spec.template.spec.serviceAccountName).toBe('tscsi-node');
    expect(dep.spec.template.spec.serviceAccountName).toBe('tscsi-controller');
    const rolesOf = (sa: string) =>
      objs.filter((o) => o.kind.endsWith('RoleBinding') && o.subjects.some((s: any) => s.name === sa)).map((b) => `${b.roleRef.kind}/${b.roleRef.name}`).sort();
    expect(rolesOf('tscsi-node')).toEqual(['ClusterRole/tscsi-node-sidecars', 'Role/tscsi-node-capacity']);
    expect(rolesOf('tscsi-controller')).toEqual(['ClusterRole/tscsi-attacher', 'ClusterRole/tscsi-health-monitor', 'ClusterRole/tscsi-provisioner', 'ClusterRole/tscsi-resizer', 'ClusterRole/tscsi-snapshotter', 'Role/tscsi-controller-capacity', 'Role/tscsi-controller-leases']);
  });

  it('RBD overlay: the controller alone reads Secrets, by name, in its namespace', () => {
    const rbd = render('overlays/rbd');
    const secretRules = rbd.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role').flatMap((r) => r.rules.filter((x: any) => x.resources.includes('secrets')).map((x: any) => ({ r, x })));
    expect(secretRules).toHaveLength(1);
    const [{ r, x }] = secretRules;
    expect(r.kind).toBe('Role');
    expect(r.metadata.namespace).toBe('tscsi');
    expect(x.verbs).toEqual(['get']);
    const example = k8s.loadAllYaml(fs.readFileSync(path.join(DEPLOY, 'examples', 'storageclass-rbd.yaml'), 'utf8')) as any[];
    const secret = example.find((o) => o.kind === 'Secret');
    expect(x.resourceNames).toEqual([secret.metadata.name]);
    expect(secret.metadata.namespace).toBe('tscsi');
    const bound = rbd.filter((o) => o.kind.endsWith('RoleBinding') && o.roleRef.name === r.metadata.name);
    expect(bound.flatMap((b) => b.subjects.map((s: any) => s.name))).toEqual(['tscsi-controller']);
  });

  // RBAC grants the node's writes cluster-wide; the policies narrow them to the node's own
  // objects (the CEL itself runs in test/e2e/deploy.test.ts against a real API server).
  describe('admission policies: the node service account writes only its own node\'s objects', () => {
    const POLICIES = ['tscsi-node-persistentvolumes', 'tscsi-node-claims', 'tscsi-node-attachments', 'tscsi-node-capacities', 'tscsi-node-snapshotcontents', 'tscsi-node-groupsnapshotcontents'];
    const WRITES = ['create', 'update', 'patch', 'delete', 'deletecollection'];
    const OP: Record<string, string> = { create: 'CREATE', update: 'UPDATE', patch: 'UPDATE', delete: 'DELETE', deletecollection: 'DELETE' };
    const policies = (rendered: any[]) => rendered.filter((o) => o.kind === 'ValidatingAdmissionPolicy');
    const sa = find(objs, 'ServiceAccount', 'tscsi-node');
    const username = `system:serviceaccount:${sa?.metadata.namespace}:${sa?.metadata.name}`;

    for (const dir of ['.', 'overlays/rbd', 'overlays/lvm', 'overlays/e2e']) {
      it(`${dir}: each policy matches only ${username}, fails closed, and a Deny binding applies it`, () => {
        const rendered = dir === '.' ? objs : render(dir);
        expect(policies(rendered).map((p) => p.metadata.name).sort()).toEqual([...POLICIES].sort());
        for (const p of policies(rendered)) {
          expect(p.apiVersion).toBe('admissionregistration.k8s.io/v1');
          expect(p.spec.failurePolicy).toBe('Fail');
          expect(p.spec.matchConditions).toEqual([{ name: 'tscsi-node-service-account', expression: `request.userInfo.username == '${username}'` }]);
          // the node comes from the pod-bound token; without it the first validation refuses
          expect(p.spec.variables[0]).toEqual({ name: 'nodeName', expression: "request.userInfo.extra[?'authentication.kubernetes.io/node-name'][0].orValue('')" });
          expect(p.spec.validations[0].expression).toBe("variables.nodeName != ''");
          for (const v of p.spec.validations) {
            expect(v.reason).toBe('Forbidden');
            expect(v.messageExpression).toContain(`'${p.metadata.name}: '`);
          }
          const bindings = rendered.filter((o) => o.kind === 'ValidatingAdmissionPolicyBinding' && o.spec.policyName === p.metadata.name);
          expect(bindings).toHaveLength(1);
          expect(bindings[0].spec.validationActions).toEqual(['Deny']);
          expect(bindings[0].spec.matchResources).toBeUndefined(); // every namespace, every object
        }
      });
    }

    it('every write the node roles grant (but events) is under a policy for its operation', () => {
      const roles = [find(objs, 'ClusterRole', 'tscsi-node-sidecars'), find(objs, 'Role', 'tscsi-node-capacity')];
      const covered = (group: string, resource: string, op: string) =>
        policies(objs).some((p) =>
          p.spec.matchConstraints.resourceRules.some((r: any) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.operations.includes(op)),
        );
      let writes = 0;
      for (const rule of roles.flatMap((r) => r.rules)) {
        for (const resource of rule.resources) {
          if (resource === 'events') continue;
          for (const verb of rule.verbs.filter((v: string) => WRITES.includes(v))) {
            writes++;
            expect(covered(rule.apiGroups[0], resource, OP[verb]), `${verb} ${resource}`).toBe(true);
          }
        }
      }
      expect(writes).toBe(14); // PV create/delete/patch, PVC patch, PVC status, VA patch, VA status, CSIStorageCapacity create/patch/delete, content and group content patch and status
    });

    it('the policies name the driver, the node sidecars\' backends and the driver\'s topology key', () => {
      const driver = find(objs, 'CSIDriver', 'csi.tscsi.dev').metadata.name;
      const backends = ds.spec.template.spec.containers
        .filter((c: any) => ['provisioner', 'attacher', 'resizer', 'snapshotter'].includes(c.name))
        .map((c: any) => c.args.find((a: string) => a.startsWith('--backends=')).slice('--backends='.length));
      expect(new Set(backends).size).toBe(1);
      const list = backends[0].split(',') as string[];
      const topologyKey = /--topology-key KEY .*\(default ([^)\s]+)\)/.exec(USAGE)![1];
      const driverArgs = ds.spec.template.spec.containers.find((c: any) => c.name === 'driver').args as string[];
      expect(driverArgs.some((a) => a.startsWith('--topology-key'))).toBe(false);
      const pv = find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-persistentvolumes');
      const vars = Object.fromEntries(pv.spec.variables.map((v: any) => [v.name, v.expression]));
      expect(vars.ours).toContain(`== '${driver}'`);
      expect(vars.ours).toContain(`'^vol-(${list.join('|')})-[0-9a-f]{32}$'`);
      expect(vars.pinned).toContain(`e.key == '${topologyKey}'`);
      const claims = find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-claims');
      const only = claims.spec.variables.find((v: any) => v.name === 'onlyOurFinalizers').expression;
      for (const b of list) expect(only).toContain(`'csi.tscsi.dev/provisioning-${b}'`);
      expect(only).not.toContain('provisioning-rbd');
      const capacities = find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-capacities');
      const own = capacities.spec.variables.find((v: any) => v.name === 'ownSegment').expression;
      expect(own).toContain(`== '${driver}'`);
      expect(own).toContain(`{'${topologyKey}': variables.nodeName}`);
      const va = find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-attachments');
      expect(va.spec.validations[1].expression).toContain(`spec.attacher == '${driver}'`);
      // the node snapshotter's contents: the same driver and backends, and the node annotation it writes (sidecars/snapshotter/node-scope.ts)
      const contents = Object.fromEntries(find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-snapshotcontents').spec.variables.map((v: any) => [v.name, v.expression]));
      expect(contents.ours).toContain(`spec.driver == '${driver}'`);
      expect(contents.ours).toContain(`'^vol-(${list.join('|')})-[0-9a-f]{32}$'`);
      expect(contents.ours).toContain(`'^snap-(${list.join('|')})-[0-9a-f]{32}$'`);
      expect(contents.mine).toContain(`'${nodeAnnotation(driver)}'`);
      expect(contents.recorded).toContain(`'${nodeAnnotation(driver)}'`);
      // and its group contents: volumes of those backends, or a group snapshot of theirs
      const groups = Object.fromEntries(find(objs, 'ValidatingAdmissionPolicy', 'tscsi-node-groupsnapshotcontents').spec.variables.map((v: any) => [v.name, v.expression]));
      expect(groups.ours).toContain(`spec.driver == '${driver}'`);
      expect(groups.ours).toContain(`'^vol-(${list.join('|')})-[0-9a-f]{32}$'`);
      expect(groups.ours).toContain(`'^group-(${list.join('|')})-[0-9a-f]{32}$'`);
      expect(groups.mine).toBe(contents.mine);
      expect(groups.recorded).toBe(contents.recorded);
    });
  });

  it('capacity tracking: each provisioner publishes CSIStorageCapacity objects owned by its DaemonSet or Deployment, in its namespace', () => {
    const prov = (spec: any) => spec.template.spec.containers.find((c: any) => c.name === 'provisioner');
    const fromPod = (field: string) => ({ valueFrom: { fieldRef: { fieldPath: field } } });
    for (const [o, level] of [[ds, undefined], [dep, '2']] as const) {
      const c = prov(o.spec);
      expect(c.args).toContain('--enable-capacity');
      expect(c.args.find((a: string) => a.startsWith('--capacity-ownerref-level='))?.split('=')[1]).toBe(level); // DaemonSet: the default 1
      expect(c.env).toContainEqual({ name: 'POD_NAME', ...fromPod('metadata.name') });
      expect(c.env).toContainEqual({ name: 'POD_NAMESPACE', ...fromPod('metadata.namespace') });
    }
    const ns = ds.metadata.namespace;
    for (const [role, owners] of [['tscsi-node-capacity', ['pods']], ['tscsi-controller-capacity', ['pods', 'replicasets']]] as const) {
      const r = find(objs, 'Role', role);
      expect(r.metadata.namespace).toBe(ns);
      expect(r.rules.find((x: any) => x.resources.includes('csistoragecapacities')).verbs.sort()).toEqual(['create', 'delete', 'list', 'patch']);
      expect(r.rules.filter((x: any) => !x.resources.includes('csistoragecapacities')).flatMap((x: any) => x.resources)).toEqual(owners);
      for (const x of r.rules.filter((x: any) => !x.resources.includes('csistoragecapacities'))) expect(x.verbs).toEqual(['get']);
    }
  });

  it('each object has one set of sidecars: the central ones serve RBD, the node ones loop and LVM of their node', () => {
    const arg = (c: any, flag: string) => c.args.find((a: string) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
    for (const name of ['provisioner', 'attacher', 'resizer', 'snapshotter']) {
      const central = dep.spec.template.spec.containers.find((c: any) => c.name === name);
      const node = ds.spec.template.spec.containers.find((c: any) => c.name === name);
      expect(arg(central, 'backends')).toBe('rbd');
      expect(arg(central, 'node-name')).toBeUndefined();
      expect(arg(node, 'backends')).toBe('loop,lvm');
      expect(arg(node, 'node-name')).toBe('$(NODE_NAME)');
    }
  });

  it('the health monitor: the node\'s checks its loop/LVM volumes and every volume of its pods, the controller\'s RBD; both may only read and write Events', () => {
    const arg = (c: any, flag: string) => c.args.find((a: string) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
    const node = ds.spec.template.spec.containers.find((c: any) => c.name === 'health-monitor');
    const central = dep.spec.template.spec.containers.find((c: any) => c.name === 'health-monitor');
    expect([arg(node, 'mode'), arg(node, 'node-name'), arg(node, 'backends')]).toEqual(['all', '$(NODE_NAME)', 'loop,lvm']);
    expect(node.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect([arg(central, 'mode'), arg(central, 'node-name'), arg(central, 'backends')]).toEqual(['controller', undefined, 'rbd']);
    for (const c of [node, central]) expect(c.volumeMounts).toEqual([{ name: 'socket-dir', mountPath: '/csi' }]);
    const grants = (role: string, resource: string) => find(objs, 'ClusterRole', role).rules.filter((r: any) => r.apiGroups.includes('') && r.resources.includes(resource)).flatMap((r: any) => r.verbs);
    for (const role of ['tscsi-health-monitor', 'tscsi-node-sidecars']) {
      expect(grants(role, 'pods')).toEqual(['list']);
      expect(grants(role, 'events')).toEqual(['create']);
      expect(grants(role, 'persistentvolumes')).toEqual(expect.arrayContaining(['list', 'watch']));
    }
    expect(grants('tscsi-node-sidecars', 'persistentvolumeclaims')).toEqual(expect.arrayContaining(['list', 'watch']));
    expect(find(objs, 'ClusterRole', 'tscsi-health-monitor').rules.flatMap((r: any) => r.verbs).filter((v: string) => v !== 'create')).toEqual(['list', 'watch', 'list']);
  });

  it('cephx key files from CSI secrets are on a memory-backed volume in every driver container', () => {
    for (const spec of [ds.spec.template.spec, dep.spec.template.spec]) {
      const driver = spec.containers.find((c: any) => c.name === 'driver');
      const stateDir = driver.args.find((a: string) => a.startsWith('--state-dir=')).slice('--state-dir='.length);
      const mount = driver.volumeMounts.find((m: any) => m.mountPath === `${stateDir}/keys`);
      expect(mount).toBeDefined();
      expect(spec.volumes.find((v: any) => v.name === mount.name).emptyDir).toMatchObject({ medium: 'Memory' });
    }
  });

  it('the overlays and the examples render', () => {
    expect(render('overlays/lvm').find((o) => o.kind === 'DaemonSet').spec.template.spec.containers[0].args).toContain('--lvm-volume-groups=tscsi');
    const rbd = render('overlays/rbd');
    expect(rbd.find((o) => o.kind === 'Deployment').spec.replicas).toBe(1);
    expect(rbd.find((o) => o.kind === 'DaemonSet').spec.template.spec.containers[0].args).toContain('--rbd-config=/etc/tscsi/rbd.json');
    const e2e = render('overlays/e2e');
    for (const o of e2e.filter((x) => x.kind === 'DaemonSet' || x.kind === 'Deployment')) {
      for (const c of o.spec.template.spec.containers) expect(c.imagePullPolicy).toBe('Never');
    }
    const scs = render('examples').filter((o) => o.kind === 'StorageClass');
    expect(scs.map((s) => [s.metadata.name, s.volumeBindingMode])).toEqual([
      ['tscsi-loop', 'WaitForFirstConsumer'],
      ['tscsi-lvm', 'WaitForFirstConsumer'],
    ]);
  });

  it('the example VolumeAttributesClass is for this driver, installed by neither kustomization, and the resizer may watch classes', () => {
    const [vac] = k8s.loadAllYaml(fs.readFileSync(path.join(DEPLOY, 'examples', 'volumeattributesclass-loop.yaml'), 'utf8')) as any[];
    expect(vac).toMatchObject({ apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttributesClass', driverName: 'csi.tscsi.dev', parameters: { directIO: 'false' } });
    for (const dir of ['.', 'examples']) expect(render(dir).filter((o) => o.kind === 'VolumeAttributesClass')).toEqual([]);
    const vacVerbs = (role: string) => find(objs, 'ClusterRole', role).rules.filter((r: any) => r.resources.includes('volumeattributesclasses')).flatMap((r: any) => r.verbs);
    for (const role of ['tscsi-resizer', 'tscsi-node-sidecars']) expect(vacVerbs(role)).toEqual(['get', 'list', 'watch']);
    expect(vacVerbs('tscsi-provisioner')).toEqual(['get']);
  });
});
