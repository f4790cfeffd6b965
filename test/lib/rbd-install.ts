// The Ceph RBD backend installed from deploy/ for the e2e files that run it (deploy-rbd.test.ts
// on one node, multinode-rbd.test.ts on three): a one-host Ceph of the file's own
// (test/lib/ceph/cluster.sh) on an address the driver's pods reach, deploy/examples/
// storageclass-rbd.yaml filled in as an admin fills it in, and what the test reads back from
// Ceph (admin rbd) to see what the driver did there.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { DEPLOY, type Installation } from './deploy-install.js';
import { startCeph, stopCeph, adminRbd, type CephEnv } from './ceph/cluster.js';

/** The example StorageClass's name (deploy/examples/storageclass-rbd.yaml). */
export const RBD_CLASS = 'tscsi-rbd';

/** deploy/examples/storageclass-rbd.yaml as an admin fills it in for this Ceph cluster. */
export function rbdExample(c: CephEnv): { config: any; secret: any; storageClass: any } {
  const objs = k8s.loadAllYaml(fs.readFileSync(path.join(DEPLOY, 'examples', 'storageclass-rbd.yaml'), 'utf8')) as any[];
  const [config, secret, storageClass] = ['ConfigMap', 'Secret', 'StorageClass'].map((k) => JSON.parse(JSON.stringify(objs.find((o) => o.kind === k))));
  const rbd = JSON.parse(config.data['rbd.json']);
  rbd.clusters[0].monitors = [c.mon];
  rbd.clusters[0].pools = [c.pool];
  rbd.mapper = 'fuse'; // no krbd in these kernels: rbd-fuse + a loop device
  config.data['rbd.json'] = JSON.stringify(rbd);
  secret.stringData = { userID: c.user, userKey: c.key };
  return { config, secret, storageClass };
}

/** A Ceph cluster for one test file and its pool's images as the admin sees them. */
export class TestCeph {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-ceph-'));
  env?: CephEnv;
  example?: ReturnType<typeof rbdExample>;

  /** Starts it with every daemon on `addr` (an address of this machine the driver's pods reach). */
  async start(addr = '127.0.0.1'): Promise<CephEnv> {
    this.env = await startCeph(this.dir, addr);
    this.example = rbdExample(this.env);
    return this.env;
  }

  /** The example's ConfigMap and Secret: what Installation.install applies after the manifests. */
  get adminObjects(): object[] {
    return [this.example!.config, this.example!.secret];
  }

  async images(): Promise<string[]> {
    return JSON.parse((await adminRbd(this.env!, ['ls', '--format', 'json', this.env!.pool])) || '[]') as string[];
  }

  /** Images of the pool and of its trash (where the driver parks an image whose snapshots still have clones). */
  async imagesAndTrash(): Promise<string[]> {
    const trash = JSON.parse((await adminRbd(this.env!, ['trash', 'ls', '--format', 'json', this.env!.pool])) || '[]') as Array<{ name: string }>;
    return [...(await this.images()), ...trash.map((t) => t.name)];
  }

  async imageMeta(image: string): Promise<Record<string, string>> {
    return JSON.parse((await adminRbd(this.env!, ['image-meta', 'list', '--format', 'json', `${this.env!.pool}/${image}`])) || '{}') as Record<string, string>;
  }

  async listing(): Promise<string> {
    return adminRbd(this.env!, ['ls', '-l', this.env!.pool]).catch(String);
  }

  /**
   * After the test's own deletions, while the driver still runs: records what is left for
   * the installation's teardown (the fuse mapper's loop devices on those images), tears the
   * installation down, then stops Ceph.
   */
  async teardownWith(inst: Installation): Promise<void> {
    if (this.env) for (const i of await this.images().catch(() => [])) inst.rbdImages.add(i);
    try {
      await inst.teardown();
    } finally {
      await stopCeph(this.dir); // also when the cluster's teardown failed: no Ceph daemons left running
    }
  }
}
