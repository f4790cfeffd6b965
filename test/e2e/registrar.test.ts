// End-to-end: our node-side sidecars against a real kubelet (test/cluster/cluster).
// The driver, the registrar and the liveness probe run as host processes next to the
// cluster, with the cluster's kubelet root dir; leader election runs in this process
// against the real apiserver.
//
// Needs root, kubectl and a built tree (`npm run build`: the processes run from dist/).
import { afterAll, describe, expect, test } from 'vitest';
import { execa } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CsiClient } from '../../sidecars/common/csi-client.js';
import { LeaderElector } from '../../sidecars/common/lease.js';
import { loadRegistration } from '../../proto/load.js';
import { releaseXfsPool } from '../../driver/host/pool.js';
import { optionsToArgv } from '../../driver/config.js';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'test/cluster/cluster');
const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const MIN = 60_000;
const DRIVER = 'csi.tscsi.dev';
const NODE = '127.0.0.1'; // the cluster's node name (--hostname-override), used as the node ID
const TOPOLOGY_KEY = 'topology.tscsi.dev/node';

// the cluster's run dir (removed by `down`) and ours: driver data/state, process logs
const runDir = mkdtempSync(join(tmpdir(), 'tscsi-e2e-'));
const work = mkdtempSync(join(tmpdir(), 'tscsi-e2e-registrar-'));
const env = { ...process.env, TSCSI_CLUSTER_DIR: runDir, KUBECACHEDIR: join(runDir, 'kube-cache') };
const kubeletDir = join(runDir, 'kubelet');
const registryDir = join(kubeletDir, 'plugins_registry');
const csiSock = join(kubeletDir, 'plugins', DRIVER, 'csi.sock');
const regSock = join(registryDir, `${DRIVER}-reg.sock`);
const dataDir = join(work, 'data');
let kubeconfig = '';
let clusterUp = false;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cluster(...args: string[]) {
  return execa('bash', [CLI, ...args], { env, stderr: 'inherit', reject: false, timeout: 60 * MIN });
}

async function kubectlJson(args: string[]): Promise<any> {
  const r = await execa(KUBECTL, ['--kubeconfig', kubeconfig, ...args, '-o', 'json'], { env, reject: false, timeout: 2 * MIN });
  if (r.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}

// ---- host processes: each logs to <work>/logs/<name>.log; all stopped in afterAll ----

interface Proc {
  name: string;
  p: ChildProcess;
  log: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const procs: Proc[] = [];

function start(name: string, script: string, args: string[]): Proc {
  const file = join(ROOT, 'dist', script);
  if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  mkdirSync(join(work, 'logs'), { recursive: true });
  const log = join(work, 'logs', `${name}.log`);
  const fd = openSync(log, 'a');
  const p = spawn(process.execPath, [file, ...args], { stdio: ['ignore', fd, fd], env: { ...process.env, KUBECONFIG: kubeconfig } });
  closeSync(fd);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.once('exit', (code, signal) => r({ code, signal })));
  const proc = { name, p, log, exited };
  procs.push(proc);
  return proc;
}

const running = (x: Proc) => x.p.exitCode === null && x.p.signalCode === null;

async function stop(x: Proc, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000) {
  if (running(x)) x.p.kill(signal);
  const t = setTimeout(() => running(x) && x.p.kill('SIGKILL'), graceMs);
  const r = await x.exited;
  clearTimeout(t);
  return r;
}

/** The process's pino lines, parsed (a line that is not JSON fails the test). */
function logLines(x: Proc): Array<Record<string, any>> {
  return readFileSync(x.log, 'utf8')
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

/** The driver's JSON log lines (anything else it printed is skipped). */
function driverLog(): Array<Record<string, any>> {
  if (!driver) return [];
  return readFileSync(driver.log, 'utf8')
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, any>];
      } catch {
        return [];
      }
    });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: r.status, body: await r.text() };
}

function canConnectUnix(p: string): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(p);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

async function ourDriverInCsiNode(): Promise<any> {
  const csiNode = await kubectlJson(['get', 'csinode', NODE]);
  return (csiNode.spec?.drivers ?? []).find((d: { name: string }) => d.name === DRIVER);
}

const registrarArgs = (extra: string[] = []) => [
  '--csi-address', csiSock,
  '--kubelet-registration-path', csiSock,
  '--plugin-registration-dir', registryDir,
  ...extra,
];

const electors: LeaderElector[] = [];
let driver: Proc | undefined;

describe('registrar, liveness probe and leader election on a real kubelet', () => {
  afterAll(async () => {
    for (const e of electors) await e.stop().catch(() => undefined);
    for (const x of [...procs].reverse()) await stop(x, 'SIGTERM', 10_000).catch(() => undefined);
    await releaseXfsPool(dataDir).catch((err: unknown) => console.error(`releasing the driver's pool failed: ${String(err)}`));
    if (existsSync(runDir)) {
      const r = await cluster('down');
      if (r.exitCode !== 0) console.error(`cluster down failed: ${r.exitCode}`);
    }
    rmSync(runDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }, 10 * MIN);

  test('the cluster comes up', { timeout: 60 * MIN }, async () => {
    const r = await cluster('up');
    expect(r.exitCode).toBe(0);
    kubeconfig = /^export KUBECONFIG=(.+)$/m.exec(r.stdout)![1]!;
    clusterUp = true;
    expect(existsSync(registryDir), 'kubelet has created its plugins_registry').toBe(true);
  });

  test('the driver serves the kubelet-side socket', { timeout: 2 * MIN }, async () => {
    expect(clusterUp).toBe(true);
    mkdirSync(join(kubeletDir, 'plugins', DRIVER), { recursive: true });
    driver = start('driver', 'driver/main.js', optionsToArgv({ endpoint: `unix://${csiSock}`, nodeId: NODE, dataDir, dataPoolSize: '10Gi', stateDir: join(work, 'state') }));
    const csi = new CsiClient(csiSock, 2_000);
    try {
      await waitFor('the driver to answer Probe', async () => running(driver!) && (await csi.Identity.Probe!({}), true), 60_000, 250);
      expect((await csi.Identity.GetPluginInfo!({})).name).toBe(DRIVER);
    } finally {
      csi.close();
    }
  });

  test('the registrar registers the driver: CSINode, node ID annotation, topology label', { timeout: 3 * MIN }, async () => {
    expect(driver && running(driver)).toBe(true);
    const port = await freePort();
    const t0 = Date.now();
    const reg = start('registrar-1', 'sidecars/registrar/main.js', registrarArgs(['--health-port', String(port), '--health-host', '127.0.0.1']));
    const entry = await waitFor('CSINode to list the driver', async () => (running(reg) ? ourDriverInCsiNode() : Promise.reject(new Error('registrar exited'))), 60_000, 100);
    const tCsiNode = Date.now();
    expect(entry).toEqual({ name: DRIVER, nodeID: NODE, topologyKeys: [TOPOLOGY_KEY], allocatable: { count: 256 } });

    const node = await kubectlJson(['get', 'node', NODE]);
    expect(node.metadata.labels[TOPOLOGY_KEY]).toBe(NODE);
    expect(JSON.parse(node.metadata.annotations['csi.volume.kubernetes.io/nodeid'])).toMatchObject({ [DRIVER]: NODE });

    // what kubelet did, from the registrar's structured log
    const lines = await waitFor('the registration status in the log', async () => {
      const l = logLines(reg);
      return l.some((x) => x.rpc === 'NotifyRegistrationStatus') && l;
    }, 10_000);
    for (const l of lines) expect(l).toMatchObject({ component: 'tscsi-registrar', level: expect.any(Number), time: expect.any(Number), msg: expect.any(String) });
    const at = (pred: (x: Record<string, any>) => boolean) => lines.find(pred)?.time as number;
    const tListen = at((x) => x.msg === 'registration socket listening');
    const tGetInfo = at((x) => x.rpc === 'GetInfo');
    const tNotify = at((x) => x.rpc === 'NotifyRegistrationStatus');
    expect(lines.find((x) => x.rpc === 'GetInfo')).toMatchObject({ type: 'CSIPlugin', name: DRIVER, endpoint: csiSock, supported_versions: ['1.0.0'] });
    expect(lines.find((x) => x.rpc === 'NotifyRegistrationStatus')).toMatchObject({ registered: true, driver: DRIVER });
    console.log(
      `registrar start -> socket ${tListen - t0} ms, -> kubelet GetInfo ${tGetInfo - t0} ms, -> NotifyRegistrationStatus ${tNotify - t0} ms, -> CSINode seen ${tCsiNode - t0} ms`,
    );
    expect(lstatSync(regSock).isSocket()).toBe(true);
    // kubelet then asked the driver itself for the node's ID, topology and attach limit
    const nodeGetInfo = await waitFor('NodeGetInfo in the driver log', async () => driverLog().find((x) => x.rpc === 'NodeGetInfo' && x.time >= t0), 10_000);
    console.log(`registrar start -> kubelet's NodeGetInfo on the driver ${nodeGetInfo.time - t0} ms`);

    expect(await httpGet(port, '/healthz')).toEqual({ status: 200, body: 'ok' });
    const metrics = await httpGet(port, '/metrics');
    expect(metrics.body).toContain(`tscsi_csi_operations_total{driver="${DRIVER}",method="/csi.v1.Identity/GetPluginInfo",code="OK"} 1\n`);
    expect(metrics.body).toContain('# TYPE tscsi_csi_operation_duration_seconds histogram\n');
  });

  test('on SIGTERM the registrar removes its socket and exits 0; kubelet deregisters the driver', { timeout: 2 * MIN }, async () => {
    const reg = procs.find((x) => x.name === 'registrar-1')!;
    expect(running(reg)).toBe(true);
    const r = await stop(reg, 'SIGTERM');
    expect(r).toEqual({ code: 0, signal: null });
    expect(existsSync(regSock)).toBe(false);
    expect(logLines(reg).at(-1)).toMatchObject({ msg: 'stopped', exitCode: 0 });
    // kubelet's plugin watcher sees the socket go and takes the driver out of CSINode and the annotation
    const t0 = Date.now();
    await waitFor('the driver to leave CSINode', async () => !(await ourDriverInCsiNode()), 60_000);
    console.log(`socket removed -> driver gone from CSINode ${Date.now() - t0} ms`);
    const node = await kubectlJson(['get', 'node', NODE]);
    expect(node.metadata.annotations['csi.volume.kubernetes.io/nodeid'] ?? '').not.toContain(DRIVER);
  });

  test('a stale socket left by a killed registrar is replaced at start and kubelet registers again', { timeout: 3 * MIN }, async () => {
    const a = start('registrar-2', 'sidecars/registrar/main.js', registrarArgs());
    await waitFor('registrar-2 to be registered', async () => logLines(a).some((x) => x.rpc === 'NotifyRegistrationStatus' && x.registered), 60_000);
    expect(await stop(a, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // what a crash leaves: the socket file, with nobody behind it
    expect(lstatSync(regSock).isSocket()).toBe(true);
    expect(await canConnectUnix(regSock)).toBe(false);

    const t0 = Date.now();
    const b = start('registrar-3', 'sidecars/registrar/main.js', registrarArgs());
    await waitFor('registrar-3 to replace the stale socket', async () => logLines(b).some((x) => x.msg === 'removed a stale socket'), 30_000);
    await waitFor('registrar-3 to be registered', async () => logLines(b).some((x) => x.rpc === 'NotifyRegistrationStatus' && x.registered), 60_000);
    expect(running(b)).toBe(true);
    expect(await canConnectUnix(regSock)).toBe(true);
    // kubelet may briefly deregister the old socket's entry after registering the new one: wait until it settles
    let since = 0;
    await waitFor(
      'CSINode to list the driver for 3 s in a row',
      async () => {
        if (!(await ourDriverInCsiNode())) since = 0;
        else if (!since) since = Date.now();
        return since > 0 && Date.now() - since >= 3_000;
      },
      60_000,
      250,
    );
    console.log(`stale socket: registrar start -> stable registration ${since - t0} ms`);
    expect(await ourDriverInCsiNode()).toMatchObject({ nodeID: NODE, topologyKeys: [TOPOLOGY_KEY] });
  });

  test('the registrar retries until the driver answers, and exits 1 when kubelet reports a failed registration', { timeout: 2 * MIN }, async () => {
    expect(driver && running(driver)).toBe(true);
    // a registry of its own (kubelet does not watch it): this test plays kubelet
    const dir = join(work, 'fake-registry');
    const late = join(work, 'late-csi.sock'); // the driver's socket appears here only later
    const r = start('registrar-fake-kubelet', 'sidecars/registrar/main.js', ['--csi-address', late, '--kubelet-registration-path', csiSock, '--plugin-registration-dir', dir]);
    await waitFor('a retry in the log', async () => logLines(r).some((x) => x.msg === 'driver not answering GetPluginInfo yet; retrying'), 30_000);
    expect(running(r)).toBe(true);
    symlinkSync(csiSock, late);
    const sock = join(dir, `${DRIVER}-reg.sock`);
    await waitFor('the registration socket', async () => existsSync(sock) && lstatSync(sock).isSocket(), 30_000);

    const Ctor = loadRegistration();
    const kubelet = new Ctor(`unix://${sock}`, grpc.credentials.createInsecure());
    const call = (method: string, req: object) =>
      new Promise<any>((res, rej) =>
        (kubelet as unknown as Record<string, (q: object, cb: (e: Error | null, v: unknown) => void) => void>)[method]!.call(kubelet, req, (e, v) => (e ? rej(e) : res(v))),
      );
    try {
      expect(await call('GetInfo', {})).toEqual({ type: 'CSIPlugin', name: DRIVER, endpoint: csiSock, supported_versions: ['1.0.0'] });
      await call('NotifyRegistrationStatus', { plugin_registered: false, error: 'rejected by the test' });
    } finally {
      kubelet.close();
    }
    const exit = await Promise.race([r.exited, sleep(15_000).then(() => 'still running')]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(existsSync(sock)).toBe(false);
    expect(logLines(r).find((x) => x.rpc === 'NotifyRegistrationStatus')).toMatchObject({ level: 50, registered: false, error: 'rejected by the test' });
  });

  test('liveness probe: /healthz is 200 while the driver runs and 500 once it is stopped', { timeout: 2 * MIN }, async () => {
    expect(driver && running(driver)).toBe(true);
    const port = await freePort();
    const lp = start('livenessprobe', 'sidecars/livenessprobe/main.js', ['--csi-address', csiSock, '--http-endpoint', `127.0.0.1:${port}`, '--probe-timeout', '1s']);
    const ok = await waitFor('/healthz to answer', async () => running(lp) && (await httpGet(port, '/healthz')), 30_000);
    expect(ok).toEqual({ status: 200, body: 'ok' });
    const metrics = await httpGet(port, '/metrics');
    expect(metrics.body).toMatch(new RegExp(`tscsi_csi_operations_total\\{driver="${DRIVER.replaceAll('.', '\\.')}",method="/csi\\.v1\\.Identity/Probe",code="OK"\\} [1-9]`));

    expect(await stop(driver!, 'SIGTERM')).toEqual({ code: 0, signal: null });
    const t0 = Date.now();
    const bad = await httpGet(port, '/healthz');
    console.log(`/healthz with the driver stopped: ${bad.status} in ${Date.now() - t0} ms: ${bad.body.trim()}`);
    expect(bad.status).toBe(500);
    expect(bad.body).toMatch(/^Probe failed: UNAVAILABLE/);
    expect(logLines(lp).some((x) => x.msg === 'health changed' && x.healthy === false)).toBe(true);
    expect((await stop(lp)).code).toBe(0);
  });

  test('leader election: exactly one of two candidates leads; stopping it hands over within the lease duration', { timeout: 3 * MIN }, async () => {
    expect(clusterUp).toBe(true);
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    const api = kc.makeApiClient(k8s.CoordinationV1Api);
    const name = `tscsi-e2e-${process.pid}`;
    const events: string[] = [];
    const make = (id: string, releaseOnStop = true) => {
      const e = new LeaderElector(api, {
        namespace: 'default',
        name,
        identity: id,
        releaseOnStop,
        onStartedLeading: () => void events.push(`${id}+`),
        onStoppedLeading: () => void events.push(`${id}-`),
      });
      electors.push(e);
      e.start();
      return e;
    };
    const a = make('candidate-a');
    const b = make('candidate-b');
    const first = await waitFor('a leader', async () => [a, b].find((e) => e.isLeader()), 20_000, 50);
    const second = first === a ? b : a;
    // for 6 s (3 renewals), exactly one leads and the Lease names it
    for (let i = 0; i < 30; i++) {
      expect([a.isLeader(), b.isLeader()].filter(Boolean).length).toBe(1);
      await sleep(200);
    }
    const lease = await api.readNamespacedLease({ name, namespace: 'default' });
    expect(lease.spec?.holderIdentity).toBe(first.identity);
    expect(lease.spec?.leaseDurationSeconds).toBe(15);
    expect(second.leader).toBe(first.identity);

    let t0 = Date.now();
    await first.stop(); // releases the lease
    await waitFor('the other candidate to take over', async () => second.isLeader(), 15_000, 50);
    const handover = Date.now() - t0;
    console.log(`leader stopped (lease released) -> other candidate leads in ${handover} ms`);
    expect(handover).toBeLessThan(15_000);
    expect(first.isLeader()).toBe(false);
    expect((await api.readNamespacedLease({ name, namespace: 'default' })).spec).toMatchObject({ holderIdentity: second.identity, leaseTransitions: 1 });
    expect(events).toEqual([`${first.identity}+`, `${first.identity}-`, `${second.identity}+`]);

    // a leader that vanishes without releasing: the next one waits for the lease to expire
    const c = make('candidate-c');
    await sleep(3_000);
    expect(c.isLeader()).toBe(false);
    t0 = Date.now();
    await second.stop({ release: false });
    let early = false;
    await waitFor('candidate-c to take over the expired lease', async () => {
      if (c.isLeader() && Date.now() - t0 < 8_000) early = true;
      return c.isLeader();
    }, 40_000, 50);
    const expiry = Date.now() - t0;
    console.log(`leader gone without releasing -> next leader after ${expiry} ms (lease duration 15 s)`);
    expect(early).toBe(false);
    // c saw the last renewal at most one renew period plus one jittered retry before the stop
    expect(expiry).toBeGreaterThanOrEqual(15_000 - 2_000 - 4_400);
    expect(expiry).toBeLessThanOrEqual(15_000 + 2 * 4_400 + 2_000);
    await c.stop();
    expect((await api.readNamespacedLease({ name, namespace: 'default' })).spec?.holderIdentity).toBe('');
    await api.deleteNamespacedLease({ name, namespace: 'default' });
  });
});
