// The common snapshot-controller on the test cluster, installed from external-snapshotter's
// own manifests (deploy/kubernetes/snapshot-controller of the Go module
// github.com/kubernetes-csi/external-snapshotter/v8 at SNAPSHOTTER_VERSION, the ones
// deploy/README.md names) through a kustomization that changes only what this cluster needs:
// the image (the binary `test/cluster/build snapshot-controller` builds from source, put in
// an image by test/cluster/mkimage: there is no registry), one replica, the host network and
// the API server's address (no kube-proxy here).
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { ClusterEnv } from './cluster-env.js';
import { MIN } from './cluster-env.js';
import { ROOT, builtComponent } from './deploy-install.js';

const UPSTREAM_IMAGE = 'registry.k8s.io/sig-storage/snapshot-controller';
const IMAGE = 'tscsi.local/snapshot-controller';
const GO = '/usr/local/go/bin/go';

async function snapshotterVersion(): Promise<string> {
  const r = await execa('bash', ['-c', '. "$1" && echo "$SNAPSHOTTER_VERSION"', '-', path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh')]);
  return r.stdout.trim();
}

/** The upstream manifests' directory in the Go module cache (downloaded once, then cached). */
async function upstreamManifests(version: string): Promise<string> {
  const r = await execa(GO, ['mod', 'download', '-json', `github.com/kubernetes-csi/external-snapshotter/v8@${version}`], { cwd: '/' });
  return path.join((JSON.parse(r.stdout) as { Dir: string }).Dir, 'deploy', 'kubernetes', 'snapshot-controller');
}

/** Installs it into kube-system and waits for its pod to be Ready; `work` holds the image and the kustomization. */
export async function installSnapshotController(env: ClusterEnv, work: string): Promise<void> {
  const version = await snapshotterVersion();
  const bin = path.join(await builtComponent('snapshot-controller', 'SNAPSHOT_CONTROLLER_BIN'), 'snapshot-controller');
  const tar = path.join(work, 'snapshot-controller.oci.tar');
  await execa('bash', [path.join(ROOT, 'test', 'cluster', 'mkimage'), '--ref', `${IMAGE}:${version}`, '--out', tar, '--entrypoint', '["/snapshot-controller"]', `${bin}:/snapshot-controller`]);
  const imp = await env.cluster('import', tar);
  if (imp.exitCode !== 0) throw new Error(`cluster import of the snapshot-controller failed (${imp.exitCode})`);
  const dir = path.join(work, 'snapshot-controller');
  fs.mkdirSync(dir, { recursive: true });
  const patch = [
    { op: 'replace', path: '/spec/replicas', value: 1 },
    { op: 'add', path: '/spec/template/spec/hostNetwork', value: true },
    { op: 'replace', path: '/spec/template/spec/containers/0/imagePullPolicy', value: 'Never' },
    {
      op: 'add',
      path: '/spec/template/spec/containers/0/env',
      value: [
        { name: 'KUBERNETES_SERVICE_HOST', value: '127.0.0.1' },
        { name: 'KUBERNETES_SERVICE_PORT', value: env.settings().PORT_APISERVER },
      ],
    },
  ];
  const kustomization = {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    // kustomize takes another kustomization's directory by relative path only
    resources: [path.relative(dir, await upstreamManifests(version))],
    images: [{ name: UPSTREAM_IMAGE, newName: IMAGE, newTag: version }],
    patches: [{ target: { kind: 'Deployment', name: 'snapshot-controller' }, patch: JSON.stringify(patch) }],
  };
  fs.writeFileSync(path.join(dir, 'kustomization.yaml'), k8s.dumpYaml(kustomization));
  await env.kubectl(['apply', '-k', dir]);
  await env.waitFor(
    'snapshot-controller pod Ready',
    async () => {
      const pods = (await env.json(['get', 'pods', '-n', 'kube-system', '-l', 'app.kubernetes.io/name=snapshot-controller'])).items as any[];
      return pods.some((p) => p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
    },
    3 * MIN,
    async () => `${await env.kubectl(['describe', 'pods', '-n', 'kube-system', '-l', 'app.kubernetes.io/name=snapshot-controller']).catch(String)}`,
  );
}
