// Brings up the real single-node cluster (test/cluster/cluster) in a run directory of the
// test's own and gives the test kubectl, the kubelet's paths and processes it can start
// next to the cluster. Everything is torn down in down(), whatever failed before.
import { execa, type Result } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { waitFor, within } from './wait.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CLI = path.join(ROOT, 'test', 'cluster', 'cluster');
/** The cluster's own kubectl (test/run-all puts it here), never one the machine happens to have. */
export const KUBECTL = process.env.KUBECTL ?? 'kubectl';
/** The node's name (kubelet's --hostname-override), which the driver also takes as its node ID. */
export const NODE_NAME = '127.0.0.1';
export const DRIVER = 'csi.tscsi.dev';
export const MIN = 60_000;

/** A process started next to the cluster, its output in <runDir>/logs/<name>.log. */
export interface HostProcess {
  name: string;
  p: ChildProcess;
  logFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export const running = (x: HostProcess) => x.p.exitCode === null && x.p.signalCode === null;

export class ClusterEnv {
  readonly runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-e2e-'));
  kubeconfig = '';
  /** What `cluster up` printed (its last lines export KUBECONFIG and TSCSI_CLUSTER_DIR). */
  upStdout = '';
  private readonly procs: HostProcess[] = [];
  // kubectl's discovery cache goes into the run dir, which `down` removes
  readonly env = { ...process.env, TSCSI_CLUSTER_DIR: this.runDir, KUBECACHEDIR: path.join(this.runDir, 'kube-cache') };

  get kubeletDir(): string {
    return path.join(this.runDir, 'kubelet');
  }

  /** In a run of `up --nodes N` (N >= 2): the node's own /var/lib/kubelet as the host sees it. */
  nodeKubeletDir(node: string): string {
    return path.join(this.runDir, 'nodes', node, 'var-lib', 'kubelet');
  }

  /** test/cluster/cluster with this run's directory. */
  cluster(...args: string[]): Promise<Result> {
    // stderr both shown and kept: a failed `up` names its reason in the error, which is what
    // the run's summary shows (a CI log may keep nothing else)
    return execa('bash', [CLI, ...args], { env: this.env, stderr: ['pipe', 'inherit'], reject: false, timeout: 60 * MIN });
  }

  /** `cluster up`, e.g. with `--nodes 3`. */
  async up(...args: string[]): Promise<void> {
    const r = await this.cluster('up', ...args);
    if (r.exitCode !== 0) {
      // one line: the summary prints a failed suite's first line only
      const tail = String(r.stderr).trim().split('\n').slice(-6).join(' | ');
      throw new Error(`cluster up failed (${r.exitCode}): ${tail}`);
    }
    this.upStdout = String(r.stdout);
    this.kubeconfig = /^export KUBECONFIG=(.+)$/m.exec(this.upStdout)![1];
  }

  /** KEY=value lines of the run's cluster.env (ports, cgroup root, the containerd used). */
  settings(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const line of fs.readFileSync(path.join(this.runDir, 'cluster.env'), 'utf8').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
      if (m) out[m[1]] = m[2].replace(/^["']|["']$/g, '');
    }
    return out;
  }

  async kubectl(args: string[], input?: string): Promise<string> {
    const r = await execa(KUBECTL, ['--kubeconfig', this.kubeconfig, ...args], { env: this.env, input, reject: false, timeout: 2 * MIN });
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
  waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 2 * MIN, describe?: () => Promise<string>): Promise<T> {
    return waitFor(what, fn, { timeoutMs, describe });
  }

  phase(pod: string): Promise<string> {
    return this.kubectl(['get', 'pod', pod, '-o', 'jsonpath={.status.phase}']);
  }

  logs(pod: string): Promise<string> {
    return this.kubectl(['logs', pod]);
  }

  /** The pod's description and the cluster's events: what a timeout on a pod needs to be understood. */
  async describePod(pod: string): Promise<string> {
    return `${await this.kubectl(['describe', 'pod', pod])}\n--- events ---\n${await this.kubectl(['get', 'events', '-A'])}`;
  }

  /** Waits until the pod is in one of the phases `want`, and returns that phase. */
  waitPhase(pod: string, want: string[], timeoutMs = 3 * MIN, describe: () => Promise<string> = () => this.describePod(pod)): Promise<string> {
    return this.waitFor(
      `pod ${pod} ${want.join('|')}`,
      async () => {
        const p = await this.phase(pod);
        return want.includes(p) && p;
      },
      timeoutMs,
      describe,
    );
  }

  /** The PV a claim is bound to and the volume ID (handle) on it, once it is Bound. */
  async bound(claim: string, timeoutMs = 2 * MIN): Promise<{ pvName: string; handle: string }> {
    const pvName = await this.waitFor(
      `claim ${claim} bound`,
      async () => {
        const p = await this.json(['get', 'pvc', claim]);
        return p.status.phase === 'Bound' && (p.spec.volumeName as string);
      },
      timeoutMs,
    );
    return { pvName, handle: await this.kubectl(['get', 'pv', pvName, '-o', 'jsonpath={.spec.csi.volumeHandle}']) };
  }

  async pvNames(): Promise<string> {
    return this.kubectl(['get', 'pv', '-o', 'name']);
  }

  /** Starts a host process (node running `args`, or `command`) whose output goes to <runDir>/logs/<name>.log. */
  start(name: string, args: string[], command = process.execPath): HostProcess {
    fs.mkdirSync(path.join(this.runDir, 'logs'), { recursive: true });
    const logFile = path.join(this.runDir, 'logs', `${name}.log`);
    const fd = fs.openSync(logFile, 'a');
    const p = spawn(command, args, { stdio: ['ignore', fd, fd], env: { ...process.env, KUBECONFIG: this.kubeconfig } });
    fs.closeSync(fd);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.once('exit', (code, signal) => r({ code, signal })));
    const proc = { name, p, logFile, exited };
    this.procs.push(proc);
    return proc;
  }

  log(name: string): string {
    return fs.readFileSync(path.join(this.runDir, 'logs', `${name}.log`), 'utf8');
  }

  /** The last error lines (pino level 50/60) of each started process's log, printed: what a failed file needs first. */
  printErrors(names: string[]): void {
    for (const n of names) {
      let errors: string[];
      try {
        errors = this.log(n).split('\n').filter((x) => /"level":(50|60)/.test(x));
      } catch {
        continue; // never started
      }
      if (errors.length) console.log(`--- ${n} errors ---\n${errors.slice(-10).join('\n')}`);
    }
  }

  /** Registers our driver with deploy/base/csidriver.yaml's fields, but storageCapacity off (no provisioner on the host publishes capacity) unless `spec` overrides it. */
  registerDriver(spec: Record<string, unknown> = {}): Promise<void> {
    return this.apply({
      apiVersion: 'storage.k8s.io/v1',
      kind: 'CSIDriver',
      metadata: { name: DRIVER },
      spec: { attachRequired: true, podInfoOnMount: false, fsGroupPolicy: 'File', volumeLifecycleModes: ['Persistent'], storageCapacity: false, ...spec },
    });
  }

  /** Sends `signal`, then SIGKILL if the process is still there after graceMs; returns how it ended. */
  async stop(x: HostProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000) {
    if (running(x)) x.p.kill(signal);
    const ended = await within(x.exited, graceMs, undefined);
    if (ended) return ended;
    x.p.kill('SIGKILL');
    return x.exited;
  }

  async stopProcesses(): Promise<void> {
    for (const x of [...this.procs].reverse()) await this.stop(x, 'SIGTERM', 10_000);
  }

  /** Stops the processes and the cluster; idempotent. Returns `cluster down`'s exit code (0 when nothing was up). */
  async down(): Promise<number> {
    await this.stopProcesses();
    let code = 0;
    if (fs.existsSync(this.runDir)) code = (await execa('bash', [CLI, 'down'], { env: this.env, stderr: 'inherit', reject: false, timeout: 10 * MIN })).exitCode ?? 1;
    fs.rmSync(this.runDir, { recursive: true, force: true });
    return code;
  }
}

/** The process's pino lines, parsed (a line that is not JSON fails the test). */
export function logLines(x: HostProcess): Array<Record<string, any>> {
  return fs
    .readFileSync(x.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, any>;
      } catch {
        throw new Error(`${x.name}: log line is not JSON: ${l}`);
      }
    });
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

/** A StorageClass of our driver that allows expansion; `extra` sets binding mode, reclaim policy, parameters. */
export function storageClass(name: string, extra: object) {
  return { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name }, provisioner: DRIVER, allowVolumeExpansion: true, ...extra };
}
