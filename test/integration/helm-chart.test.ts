// deploy/helm/tscsi checked with the real Helm (cmd/helm of the Go module helm.sh/helm/v4, built
// by name from the Go module proxy and cached: test/cluster/build helm): `helm lint`, and
// `helm template` compared object by object with `kubectl kustomize` of deploy/ and its
// overlays, so the two install paths never drift. The only differences allowed are INTENDED
// below, each with its reason. The chart's values are checked for what they change.
import { describe, it, expect, beforeAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import * as k8s from '@kubernetes/client-node';
import { KUBECTL } from '../lib/cluster-env.js';
import { builtComponent } from '../lib/deploy-install.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const CHART = path.join(DEPLOY, 'helm', 'tscsi');
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;

/**
 * What the chart renders and kustomize does not, on purpose. Labels: Helm's own bookkeeping
 * (`helm upgrade` and `helm uninstall` find the release's objects by them); kustomize's
 * part-of label is on both.
 */
const INTENDED = {
  labels: ['app.kubernetes.io/managed-by', 'app.kubernetes.io/instance', 'helm.sh/chart'],
  /**
   * Whitespace in multi-line strings (the admission policies' CEL, written as folded `>-`
   * scalars): kustomize and Helm's YAML libraries fold the line breaks around more-indented
   * lines differently (one blank line more or less). CEL reads both the same.
   */
  multiLineWhitespace: true,
  /** The example classes carry the chart's labels (part-of too): the release installs them; deploy/examples/ is applied on its own, unlabelled. */
  exampleLabels: ['app.kubernetes.io/part-of'],
};

/** Multi-line strings with their whitespace runs as one space (INTENDED.multiLineWhitespace). */
function foldWhitespace(v: unknown): unknown {
  if (typeof v === 'string') return v.includes('\n') ? v.replace(/\s+/g, ' ') : v;
  if (Array.isArray(v)) return v.map(foldWhitespace);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, foldWhitespace(x)]));
  return v;
}

let helm: string;
beforeAll(async () => {
  // Cached after the first build (npm test's prebuild warms it); a cold build takes ~10 minutes.
  helm = path.join(await builtComponent('helm', 'HELM_BIN'), 'helm');
}, 3_600_000);

type Obj = Record<string, any>;
const plain = (yaml: string): Obj[] => JSON.parse(JSON.stringify(k8s.loadAllYaml(yaml))).filter((o: Obj | null) => o);
const key = (o: Obj) => `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`;

async function template(values: string[], namespace = 'tscsi'): Promise<Obj[]> {
  const r = await execa(helm, ['template', 'tscsi', CHART, '--namespace', namespace, ...values.flatMap((v) => ['--set', v])]);
  return plain(r.stdout);
}

const kustomize = async (dir: string): Promise<Obj[]> => plain((await execa(KUBECTL, ['kustomize', path.join(DEPLOY, dir)])).stdout);

/** The chart's objects less INTENDED, by key. */
function normalised(objs: Obj[], dropLabels = INTENDED.labels): Map<string, Obj> {
  const out = new Map<string, Obj>();
  for (const o of objs) {
    const labels = o.metadata.labels as Record<string, string> | undefined;
    for (const l of dropLabels) delete labels?.[l];
    if (labels && Object.keys(labels).length === 0) delete o.metadata.labels;
    out.set(key(o), foldWhitespace(o) as Obj);
  }
  return out;
}

/** Same objects, same content: each object compared on its own for a readable difference. */
function expectSame(chart: Obj[], kust: Obj[], dropLabels = INTENDED.labels): void {
  const a = normalised(chart, dropLabels);
  const b = normalised(kust);
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, o] of b) expect(a.get(k), k).toEqual(o);
}

const workloads = (objs: Obj[]) => objs.filter((o) => o.kind === 'DaemonSet' || o.kind === 'Deployment');
const containers = (objs: Obj[]) => workloads(objs).flatMap((w) => w.spec.template.spec.containers as Obj[]);
const byName = (objs: Obj[], kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name)!;
const arg = (objs: Obj[], kind: string, container: string) => byName(objs, kind, kind === 'DaemonSet' ? 'tscsi-node' : 'tscsi-controller').spec.template.spec.containers.find((c: Obj) => c.name === container).args as string[];

describe('deploy/helm/tscsi', () => {
  it('helm lint passes (strict), and the chart is the package\'s version', async () => {
    const r = await execa(helm, ['lint', '--strict', CHART], { reject: false });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    const chart = k8s.loadYaml(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as Obj;
    expect([chart.version, chart.appVersion]).toEqual([VERSION, VERSION]);
  });

  it('renders the objects of kubectl apply -k deploy/ (namespace.create=true: the chart leaves the namespace to helm by default)', async () => {
    const chart = await template(['namespace.create=true']);
    expect(containers(chart)).toHaveLength(15);
    expectSame(chart, await kustomize('.'));
    // without namespace.create, the same less the Namespace
    expectSame(await template([]), (await kustomize('.')).filter((o) => o.kind !== 'Namespace'));
  });

  it('lvm.volumeGroups renders deploy/overlays/lvm; rbd.enabled renders deploy/overlays/rbd', async () => {
    expectSame(await template(['namespace.create=true', 'lvm.volumeGroups={tscsi}']), await kustomize('overlays/lvm'));
    expectSame(await template(['namespace.create=true', 'rbd.enabled=true']), await kustomize('overlays/rbd'));
  });

  it('the example classes, each off by default, render as deploy/examples/ has them', async () => {
    const kinds = new Set(['StorageClass', 'VolumeSnapshotClass', 'VolumeGroupSnapshotClass', 'VolumeAttributesClass']);
    expect((await template([])).filter((o) => kinds.has(o.kind))).toEqual([]);
    const files = ['storageclass-loop.yaml', 'storageclass-lvm.yaml', 'storageclass-rbd.yaml', 'snapshotclass.yaml', 'volumeattributesclass-loop.yaml'];
    const examples = files.flatMap((f) => plain(fs.readFileSync(path.join(DEPLOY, 'examples', f), 'utf8'))).filter((o) => kinds.has(o.kind));
    const names = examples.map((o) => o.metadata.name);
    expect(names.length).toBe(8);
    const enable = examples.map((o) => {
      const section = { StorageClass: 'storageClasses', VolumeSnapshotClass: 'volumeSnapshotClasses', VolumeGroupSnapshotClass: 'volumeGroupSnapshotClasses', VolumeAttributesClass: 'volumeAttributesClasses' }[o.kind as string];
      return `${section}.${o.metadata.name}.enabled=true`;
    });
    const chart = (await template(enable)).filter((o) => kinds.has(o.kind));
    expectSame(chart, examples, [...INTENDED.labels, ...INTENDED.exampleLabels]);
  });

  it('values change what they say: image by digest, scheduling, limits, leader election, metrics, sidecar env, another namespace and kubelet dir', async () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    const objs = await template(
      [
        `image.digest=${digest}`,
        'image.tag=9.9.9',
        'node.nodeSelector.disk=ssd',
        'node.tolerations=null',
        'node.priorityClassName=tscsi-critical',
        'controller.tolerations[0].key=dedicated,controller.tolerations[0].operator=Exists',
        'node.resources.driver.limits.memory=1Gi',
        'leaderElection.enabled=false',
        'metrics.enabled=false',
        'rbd.enabled=true',
        'rbd.readableSecrets={ceph-a,ceph-b}',
        'kubeletDir=/var/lib/k0s/kubelet',
        'loop.poolSize=100Gi',
        'lvm.volumeGroups={tscsi-$(NODE_NAME)}',
        'lvm.mode=dm',
        'lvm.systemId=$(NODE_NAME)',
        'sidecarEnv[0].name=KUBERNETES_SERVICE_HOST,sidecarEnv[0].value=10.0.0.1',
      ],
      'storage',
    );
    expect(new Set(containers(objs).map((c) => c.image))).toEqual(new Set([`tscsi.local/tscsi@${digest}`]));
    const node = byName(objs, 'DaemonSet', 'tscsi-node').spec.template.spec;
    const ctl = byName(objs, 'Deployment', 'tscsi-controller').spec.template.spec;
    expect([node.nodeSelector, node.tolerations, node.priorityClassName]).toEqual([{ disk: 'ssd' }, undefined, 'tscsi-critical']);
    expect(ctl.tolerations).toEqual([{ key: 'dedicated', operator: 'Exists' }]);
    expect(node.containers[0].resources).toEqual({ requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '1Gi' } });
    for (const c of ctl.containers) expect(c.args, c.name).not.toContain('--leader-election');
    for (const c of containers(objs)) {
      expect(c.args.filter((a: string) => a.startsWith('--metrics')), c.name).toEqual([]);
      expect((c.ports ?? []).map((p: Obj) => p.name), c.name).not.toContain('metrics');
    }
    expect(arg(objs, 'DaemonSet', 'driver')).toEqual(
      expect.arrayContaining(['--data-pool-size=100Gi', '--rbd-config=/etc/tscsi/rbd.json', '--allowed-path-root=/var/lib/k0s/kubelet', '--lvm-volume-groups=tscsi-$(NODE_NAME)', '--lvm-mode=dm', '--lvm-system-id=$(NODE_NAME)']),
    );
    expect(arg(objs, 'DaemonSet', 'health-monitor')).toContain('--kubelet-dir=/var/lib/k0s/kubelet');
    expect(node.containers[0].volumeMounts).toContainEqual({ name: 'kubelet-dir', mountPath: '/var/lib/k0s/kubelet', mountPropagation: 'Bidirectional' });
    expect(node.volumes.map((v: Obj) => v.hostPath?.path).filter(Boolean)).toEqual(
      expect.arrayContaining(['/var/lib/k0s/kubelet', '/var/lib/k0s/kubelet/plugins/csi.tscsi.dev', '/var/lib/k0s/kubelet/plugins_registry']),
    );
    const apiEnv = { name: 'KUBERNETES_SERVICE_HOST', value: '10.0.0.1' };
    const withApiEnv = containers(objs).filter((c) => (c.env ?? []).some((e: Obj) => e.name === apiEnv.name)).map((c) => c.name);
    expect(withApiEnv.sort()).toEqual([...['provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor'], ...['provisioner', 'attacher', 'resizer', 'snapshotter', 'health-monitor']].sort());
    expect(byName(objs, 'Role', 'tscsi-controller-secrets').rules[0].resourceNames).toEqual(['ceph-a', 'ceph-b']);
    // Everything namespaced is in the release's namespace, and so is every name that points there
    // (RBAC subjects, the service account the admission policies hold to its node).
    const namespaced = objs.filter((o) => o.metadata.namespace !== undefined);
    expect(namespaced.length).toBeGreaterThan(5);
    expect(new Set(namespaced.map((o) => o.metadata.namespace))).toEqual(new Set(['storage']));
    const subjects = objs.flatMap((o) => (o.subjects ?? []) as Obj[]);
    expect(new Set(subjects.map((s) => s.namespace))).toEqual(new Set(['storage']));
    const text = JSON.stringify(objs);
    expect(text).toContain('system:serviceaccount:storage:tscsi-node');
    expect(text).not.toMatch(/serviceaccount:tscsi:|"namespace":"tscsi"/);
    // no digest: the tag, else the chart's appVersion (kustomize's newTag)
    expect(new Set(containers(await template(['image.tag=0.2.0'])).map((c) => c.image))).toEqual(new Set(['tscsi.local/tscsi:0.2.0']));
  });
});
