// test/cluster/cluster up when building a pinned binary fails: it must fail, not fall back
// to Debian's containerd 1.6 (a different cluster) on its own. The other binaries come from
// a private cache holding stand-ins, so only the containerd build runs, and it fails at once:
// a version that does not exist, with the module proxy off.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CLUSTER = path.join(ROOT, 'test', 'cluster', 'cluster');
const K8S_VERSION = /K8S_VERSION:-(v[\d.]+)/.exec(fs.readFileSync(path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh'), 'utf8'))![1];
const ETCD_VERSION = /ETCD_VERSION:-(v[\d.]+)/.exec(fs.readFileSync(path.join(ROOT, 'test', 'cluster', 'lib', 'versions.sh'), 'utf8'))![1];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-cluster-build-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function standIns(dir: string, names: string[]) {
  fs.mkdirSync(dir, { recursive: true });
  for (const n of names) fs.writeFileSync(path.join(dir, n), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  fs.writeFileSync(path.join(dir, '.complete'), '');
}

describe('cluster up', () => {
  it('fails when the containerd 2.x build fails, instead of falling back to Debian containerd', async () => {
    const cache = path.join(tmp, 'cache');
    standIns(path.join(cache, `kubernetes-${K8S_VERSION}`), ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet']);
    standIns(path.join(cache, `kubectl-${K8S_VERSION}`), ['kubectl']);
    standIns(path.join(cache, `etcd-${ETCD_VERSION}`), ['etcd']);
    const runDir = path.join(tmp, 'run');
    const child = spawn('bash', [CLUSTER, 'up'], {
      env: {
        ...process.env,
        TSCSI_CLUSTER_CACHE: cache,
        TSCSI_CLUSTER_DIR: runDir,
        TSCSI_CLUSTER_STATE: path.join(tmp, 'last'),
        CONTAINERD_VERSION: 'v2.99.99-tscsi-does-not-exist',
        GOPROXY: 'off',
        GOFLAGS: '-mod=mod',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so a regression can be stopped whole
    });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const exitCode = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        // The old behaviour: stop it before it installs Debian's containerd and starts daemons.
        if (/falling back/i.test(stderr)) process.kill(-child.pid!, 'SIGKILL');
      });
      child.on('exit', (code) => resolve(code));
    });
    expect(stderr).not.toMatch(/falling back/i);
    expect(exitCode, stderr).not.toBe(0);
    expect(stderr).toMatch(/building the binaries failed/);
    expect(stdout).toBe('');
    // Nothing was started: the run directory was never made.
    expect(fs.existsSync(runDir)).toBe(false);
  }, 120_000);
});
