// The Ceph CLIs (rbd, rados, ceph) run as the driver runs every host tool: argument arrays,
// timeouts, `--format json`. Credentials never reach a command line or a log: a key from
// the CSI secrets is written to a fresh 0600 file in a 0700 directory, passed with
// --keyfile, and removed as soon as the command is done. No ceph.conf is read (-c /dev/null).
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, CommandError, type RunResult } from '../../host/exec.js';
import type { FailpointName } from '../../failpoints.js';
import { BackendError } from '../backend.js';
import { checkKey, checkUser, invalid, type ClusterConfig, type PoolRef } from './config.js';

export interface Credentials {
  user: string;
  /** Exactly one of: the key itself (from CSI secrets) or a file holding it (from the config). */
  key?: string;
  keyFile?: string;
}

/** ceph-csi's secret keys: userID and userKey. */
export function credentialsFrom(cluster: ClusterConfig, secrets?: Record<string, string>): Credentials {
  if (secrets && (secrets.userID !== undefined || secrets.userKey !== undefined)) {
    if (!secrets.userID || !secrets.userKey) throw invalid('the CSI secrets must carry both userID and userKey');
    return { user: checkUser(secrets.userID), key: checkKey(secrets.userKey) };
  }
  if (cluster.user && cluster.keyFile) return { user: cluster.user, keyFile: cluster.keyFile };
  throw invalid(
    `no cephx credentials for cluster ${cluster.clusterID}: the request carries no userID/userKey secrets and the rbd config file gives this cluster no default user and keyFile`,
  );
}

export function poolSpec(p: PoolRef): string {
  return p.namespace ? `${p.pool}/${p.namespace}` : p.pool;
}

export function imageSpec(p: PoolRef, image: string, snap?: string): string {
  return `${poolSpec(p)}/${image}${snap ? `@${snap}` : ''}`;
}

/** What an rbd failure means, from its stderr ("(2) No such file or directory"). */
export function errnoOf(err: unknown): number | undefined {
  if (!(err instanceof CommandError)) return undefined;
  const m = /\((\d+)\) [A-Z][a-z]/.exec(err.stderr);
  return m ? Number(m[1]) : undefined;
}

export const ENOENT = 2;
export const EEXIST = 17;
export const EBUSY = 16;
export const ENOTEMPTY = 39;

export function isNotFound(err: unknown): boolean {
  return errnoOf(err) === ENOENT;
}

/** An rbd/rados/ceph command that has not answered in this long (a monitor unreachable) is taken as hung. */
const CEPH_TOOL_TIMEOUT_MS = 120_000;

/**
 * A configured key file must hold a key before any tool runs with it: given a missing or empty
 * --keyfile, the Ceph tools fall back to no authentication and keep hunting for a monitor
 * that insists on cephx until our timeout, two minutes per call. Kubelet fills an optional
 * Secret volume some time after the container starts, so "not yet" is an ordinary state.
 */
async function checkKeyFile(user: string, file: string): Promise<void> {
  const st = await fs.stat(file).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error || !st.isFile() || st.size === 0) {
    const why = st instanceof Error ? (st.code ?? st.message) : st.isFile() ? 'empty' : 'not a file';
    throw new BackendError('precondition', `the cephx key file ${file} of user ${user} is not usable (${why}): the rbd config names it as this cluster's default key; put the key there (in Kubernetes, the Secret mounted at that path, which kubelet may fill in a minute after the Secret is created)`);
  }
}

export class CephCli {
  constructor(
    private readonly keyDir: string,
    private readonly timeoutMs = CEPH_TOOL_TIMEOUT_MS,
  ) {}

  async init(): Promise<void> {
    await fs.mkdir(this.keyDir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.keyDir, 0o700);
    // Key files of calls a crash interrupted.
    for (const n of await fs.readdir(this.keyDir)) await fs.rm(path.join(this.keyDir, n), { force: true });
  }

  /** Runs fn with the path of a key file for creds; a secret's file exists only meanwhile. */
  async withKeyFile<T>(creds: Credentials, fn: (file: string) => Promise<T>): Promise<T> {
    if (creds.keyFile) {
      await checkKeyFile(creds.user, creds.keyFile);
      return fn(creds.keyFile);
    }
    const file = path.join(this.keyDir, `key-${process.pid}-${randomBytes(8).toString('hex')}`);
    const h = await fs.open(file, 'wx', 0o600);
    try {
      await h.writeFile(`${creds.key}\n`);
      await h.close();
      return await fn(file);
    } finally {
      await h.close().catch(() => undefined);
      await fs.rm(file, { force: true });
    }
  }

  /** The connection arguments: monitors, user, key file, no config file, no mon config. */
  connArgs(cluster: ClusterConfig, user: string, keyFile: string): string[] {
    return ['-c', '/dev/null', '-m', cluster.monitors.join(','), '--id', user, '--keyfile', keyFile];
  }

  async tool(tool: 'rbd' | 'rados' | 'ceph', cluster: ClusterConfig, creds: Credentials, args: string[], timeoutMs = this.timeoutMs, failpoint?: FailpointName): Promise<RunResult> {
    return this.withKeyFile(creds, (kf) =>
      run(tool, [...this.connArgs(cluster, creds.user, kf), ...args], { timeoutMs, env: { CEPH_ARGS: '' }, failpoint }),
    );
  }

  rbd(cluster: ClusterConfig, creds: Credentials, args: string[], timeoutMs?: number, failpoint?: FailpointName): Promise<RunResult> {
    return this.tool('rbd', cluster, creds, args, timeoutMs, failpoint);
  }

  async rbdJson<T>(cluster: ClusterConfig, creds: Credentials, args: string[]): Promise<T> {
    const r = await this.rbd(cluster, creds, [...args, '--format', 'json']);
    try {
      return JSON.parse(r.stdout || 'null') as T;
    } catch {
      throw new Error(`rbd ${args[0]} printed something that is not JSON: ${r.stdout.slice(0, 200)}`);
    }
  }
}
