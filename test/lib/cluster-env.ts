// Brings up the real single-node cluster (test/cluster/cluster) in a run directory of the
// test's own and gives the test kubectl, the kubelet's paths and processes it can start
// next to the cluster. Everything is torn down in stop(), whatever failed before.
import { execa } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CLI = path.join(ROOT, 'test', 'cluster', 'cluster');
export const NODE_NAME = '127.0.0.1';

export class ClusterEnv {
  readonly runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-'));
  kubeconfig = '';
  private readonly procs: Array<{ name: string; p: ChildProcess }> = [];
  private readonly env = { ...process.env, TSCSI_CLUSTER_DIR: this.runDir, KUBECACHEDIR: path.join(this.runDir, 'kube-cache') };

  get kubeletDir(): string {
    return path.join(this.runDir, 'kubelet');
  }

  async up(): Promise<void> {
    const r = await execa('bash', [CLI, 'up'], { env: this.env, stderr: 'inherit', reject: false, timeout: 60 * 60_000 });
    if (r.exitCode !== 0) throw new Error(`cluster up failed (${r.exitCode})`);
    this.kubeconfig = /^export KUBECONFIG=(.+)$/m.exec(r.stdout)![1];
  }

  async kubectl(args: string[], input?: string): Promise<string> {
    const r = await execa('kubectl', ['--kubeconfig', this.kubeconfig, ...args], { env: this.env, input, reject: false, timeout: 120_000 });
    if (r.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
    return r.stdout;
  }

  async apply(obj: object): Promise<void> {
    await this.kubectl(['apply', '-f', '-'], JSON.stringify(obj));
  }

  async json(args: string[]): Promise<any> {
    return JSON.parse(await this.kubectl([...args, '-o', 'json']));
  }

  /** Polls fn until it returns a truthy value; fails with what `describe` says. */
  async waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000, describe?: () => Promise<string>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const v = await fn();
        if (v) return v;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) {
        const extra = describe ? await describe().catch((e) => String(e)) : '';
        throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}\n${extra}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Starts a host process whose output goes to <runDir>/logs/<name>.log. */
  start(name: string, args: string[]): ChildProcess {
    fs.mkdirSync(path.join(this.runDir, 'logs'), { recursive: true });
    const fd = fs.openSync(path.join(this.runDir, 'logs', `${name}.log`), 'a');
    const p = spawn(process.execPath, args, { stdio: ['ignore', fd, fd], env: { ...process.env, KUBECONFIG: this.kubeconfig } });
    fs.closeSync(fd);
    this.procs.push({ name, p });
    return p;
  }

  log(name: string): string {
    return fs.readFileSync(path.join(this.runDir, 'logs', `${name}.log`), 'utf8');
  }

  async stopProcesses(): Promise<void> {
    for (const { p } of this.procs.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  }

  async down(): Promise<void> {
    await this.stopProcesses();
    if (fs.existsSync(this.runDir)) await execa('bash', [CLI, 'down'], { env: this.env, stderr: 'inherit', reject: false, timeout: 10 * 60_000 });
    fs.rmSync(this.runDir, { recursive: true, force: true });
  }
}

/** A busybox pod (hostNetwork, never pulled) running `script` with the claim at /data, or as /dev/xvda for a block claim. */
export function pod(name: string, claim: string, script: string, block = false) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default' },
    spec: {
      hostNetwork: true,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'c',
          image: 'tscsi.local/busybox:1',
          imagePullPolicy: 'Never',
          command: ['sh', '-c', script],
          ...(block ? { volumeDevices: [{ name: 'v', devicePath: '/dev/xvda' }] } : { volumeMounts: [{ name: 'v', mountPath: '/data' }] }),
        },
      ],
      volumes: [{ name: 'v', persistentVolumeClaim: { claimName: claim } }],
    },
  };
}

/** A ReadWriteOnce claim of `size` from StorageClass `sc`. */
export function claim(name: string, sc: string, size: string, extra: object = {}) {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, namespace: 'default' },
    spec: { storageClassName: sc, accessModes: ['ReadWriteOnce'], resources: { requests: { storage: size } }, ...extra },
  };
}
