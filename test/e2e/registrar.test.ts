// End-to-end: our node-side sidecars against a real kubelet (test/cluster/cluster).
// The driver, the registrar and the liveness probe run as host processes next to the
// cluster, with the cluster's kubelet root dir; leader election runs in this process
// against the real apiserver. Each case starts the sidecars it needs and stops them again,
// so the next one finds the driver registered by nobody.
//
// Needs root, kubectl and a built tree (`npm run build`: the processes run from dist/).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, lstatSync, symlinkSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { ClusterEnv, DRIVER, MIN, NODE_NAME as NODE, logLines, running, type HostProcess } from '../lib/cluster-env.js';
import { DriverHarness } from '../lib/driver-harness.js';
import { freePort, holdsFor, waitFor, within } from '../lib/wait.js';
import { LeaderElector } from '../../sidecars/common/lease.js';
import { loadRegistration } from '../../proto/load.js';

const ROOT = resolve(import.meta.dirname, '../..');
const TOPOLOGY_KEY = 'topology.tscsi.dev/node';

const env = new ClusterEnv();
const registryDir = join(env.kubeletDir, 'plugins_registry');
const csiSock = join(env.kubeletDir, 'plugins', DRIVER, 'csi.sock');
const regSock = join(registryDir, `${DRIVER}-reg.sock`);
let driver: DriverHarness | undefined;
const electors: LeaderElector[] = [];

/** A sidecar from dist/ as a host process next to the cluster. */
function startSidecar(name: string, sidecar: string, args: string[]): HostProcess {
  const file = join(ROOT, 'dist', 'sidecars', sidecar, 'main.js');
  if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  return env.start(name, [file, ...args]);
}

/** The driver's JSON log lines (anything else it printed is skipped). */
async function driverLog(): Promise<Array<Record<string, any>>> {
  return (await driver!.log()).split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, any>];
    } catch {
      return [];
    }
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
  const csiNode = await env.json(['get', 'csinode', NODE]);
  return (csiNode.spec?.drivers ?? []).find((d: { name: string }) => d.name === DRIVER);
}

const registrarArgs = (extra: string[] = []) => ['--csi-address', csiSock, '--kubelet-registration-path', csiSock, '--plugin-registration-dir', registryDir, ...extra];

const registered = (x: HostProcess) => waitFor(`${x.name} to be registered`, async () => logLines(x).some((l) => l.rpc === 'NotifyRegistrationStatus' && l.registered), { timeoutMs: 60_000 });

/** Stops a registrar and waits until kubelet has taken the driver out of CSINode: the next case starts from there. */
async function stopRegistrar(x: HostProcess): Promise<void> {
  await env.stop(x);
  await waitFor('the driver to leave CSINode', async () => !(await ourDriverInCsiNode()), { timeoutMs: 60_000 });
}

beforeAll(async () => {
  await env.up();
  expect(existsSync(registryDir), 'kubelet has created its plugins_registry').toBe(true);
  driver = await DriverHarness.start({ socketPath: csiSock, nodeId: NODE, pathRoots: [env.kubeletDir] });
  expect((await driver.client!.Identity.GetPluginInfo({})).name).toBe(DRIVER);
}, 60 * MIN);

afterAll(async () => {
  for (const e of electors) await e.stop().catch(() => undefined);
  const code = await env.down();
  if (code !== 0) console.error(`cluster down failed: ${code}`);
  await driver?.cleanup();
}, 10 * MIN);

describe('registrar, liveness probe and leader election on a real kubelet', () => {
  test('the registrar registers the driver: CSINode, node ID annotation, topology label', { timeout: 3 * MIN }, async () => {
    const port = await freePort();
    const t0 = Date.now();
    const reg = startSidecar('registrar-1', 'registrar', registrarArgs(['--health-port', String(port), '--health-host', '127.0.0.1']));
    try {
      await registrationSeen(reg, t0, port);
    } finally {
      await stopRegistrar(reg);
    }
  });

  /** What registrar-1 and kubelet did, seen from CSINode, the Node, both logs and the registrar's HTTP endpoint. */
  async function registrationSeen(reg: HostProcess, t0: number, port: number): Promise<void> {
    const entry = await waitFor('CSINode to list the driver', async () => (running(reg) ? ourDriverInCsiNode() : Promise.reject(new Error('registrar exited'))), { timeoutMs: 60_000, everyMs: 100 });
    const tCsiNode = Date.now();
    expect(entry).toEqual({ name: DRIVER, nodeID: NODE, topologyKeys: [TOPOLOGY_KEY], allocatable: { count: 256 } });

    const node = await env.json(['get', 'node', NODE]);
    expect(node.metadata.labels[TOPOLOGY_KEY]).toBe(NODE);
    expect(JSON.parse(node.metadata.annotations['csi.volume.kubernetes.io/nodeid'])).toMatchObject({ [DRIVER]: NODE });

    // what kubelet did, from the registrar's structured log
    const lines = await waitFor('the registration status in the log', async () => {
      const l = logLines(reg);
      return l.some((x) => x.rpc === 'NotifyRegistrationStatus') && l;
    }, { timeoutMs: 10_000, everyMs: 200 });
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
    const nodeGetInfo = await waitFor('NodeGetInfo in the driver log', async () => (await driverLog()).find((x) => x.rpc === 'NodeGetInfo' && x.time >= t0), { timeoutMs: 10_000, everyMs: 200 });
    console.log(`registrar start -> kubelet's NodeGetInfo on the driver ${nodeGetInfo.time - t0} ms`);

    expect(await httpGet(port, '/healthz')).toEqual({ status: 200, body: 'ok' });
    const metrics = await httpGet(port, '/metrics');
    expect(metrics.body).toContain(`tscsi_csi_operations_total{driver="${DRIVER}",method="/csi.v1.Identity/GetPluginInfo",code="OK"} 1\n`);
    expect(metrics.body).toContain('# TYPE tscsi_csi_operation_duration_seconds histogram\n');
  }

  test('on SIGTERM the registrar removes its socket and exits 0; kubelet deregisters the driver', { timeout: 2 * MIN }, async () => {
    const reg = startSidecar('registrar-term', 'registrar', registrarArgs());
    await registered(reg);
    await waitFor('CSINode to list the driver', ourDriverInCsiNode, { timeoutMs: 60_000 });
    const r = await env.stop(reg, 'SIGTERM');
    expect(r).toEqual({ code: 0, signal: null });
    expect(existsSync(regSock)).toBe(false);
    expect(logLines(reg).at(-1)).toMatchObject({ msg: 'stopped', exitCode: 0 });
    // kubelet's plugin watcher sees the socket go and takes the driver out of CSINode and the annotation
    const t0 = Date.now();
    await waitFor('the driver to leave CSINode', async () => !(await ourDriverInCsiNode()), { timeoutMs: 60_000, everyMs: 200 });
    console.log(`socket removed -> driver gone from CSINode ${Date.now() - t0} ms`);
    const node = await env.json(['get', 'node', NODE]);
    expect(node.metadata.annotations['csi.volume.kubernetes.io/nodeid'] ?? '').not.toContain(DRIVER);
  });

  test('a stale socket left by a killed registrar is replaced at start and kubelet registers again', { timeout: 3 * MIN }, async () => {
    const a = startSidecar('registrar-2', 'registrar', registrarArgs());
    await registered(a);
    expect(await env.stop(a, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // what a crash leaves: the socket file, with nobody behind it
    expect(lstatSync(regSock).isSocket()).toBe(true);
    expect(await canConnectUnix(regSock)).toBe(false);

    const t0 = Date.now();
    const b = startSidecar('registrar-3', 'registrar', registrarArgs());
    try {
      await staleSocketReplaced(b, t0);
    } finally {
      await stopRegistrar(b);
    }
  });

  async function staleSocketReplaced(b: HostProcess, t0: number): Promise<void> {
    await waitFor('registrar-3 to replace the stale socket', async () => logLines(b).some((x) => x.msg === 'removed a stale socket'), { timeoutMs: 30_000, everyMs: 200 });
    await registered(b);
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
      { timeoutMs: 60_000, everyMs: 250 },
    );
    console.log(`stale socket: registrar start -> stable registration ${since - t0} ms`);
    expect(await ourDriverInCsiNode()).toMatchObject({ nodeID: NODE, topologyKeys: [TOPOLOGY_KEY] });
  }

  test('the registrar retries until the driver answers, and exits 1 when kubelet reports a failed registration', { timeout: 2 * MIN }, async () => {
    // a registry of its own (kubelet does not watch it): this test plays kubelet
    const dir = join(env.runDir, 'fake-registry');
    const late = join(env.runDir, 'late-csi.sock'); // the driver's socket appears here only later
    const r = startSidecar('registrar-fake-kubelet', 'registrar', ['--csi-address', late, '--kubelet-registration-path', csiSock, '--plugin-registration-dir', dir]);
    await waitFor('a retry in the log', async () => logLines(r).some((x) => x.msg === 'waiting for the driver to answer GetPluginInfo'), { timeoutMs: 30_000, everyMs: 200 });
    expect(running(r)).toBe(true);
    symlinkSync(csiSock, late);
    const sock = join(dir, `${DRIVER}-reg.sock`);
    await waitFor('the registration socket', async () => existsSync(sock) && lstatSync(sock).isSocket(), { timeoutMs: 30_000, everyMs: 200 });

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
    const exit = await within(r.exited, 15_000, 'still running');
    expect(exit).toEqual({ code: 1, signal: null });
    expect(existsSync(sock)).toBe(false);
    expect(logLines(r).find((x) => x.rpc === 'NotifyRegistrationStatus')).toMatchObject({ level: 50, registered: false, error: 'rejected by the test' });
  });

  // A driver of its own, which the case stops: the others keep theirs.
  test('liveness probe: /healthz is 200 while the driver runs and 500 once it is stopped', { timeout: 2 * MIN }, async () => {
    const own = await DriverHarness.start({ nodeId: NODE });
    try {
      await probeFollowsDriver(own);
    } finally {
      await own.cleanup();
    }
  });

  async function probeFollowsDriver(own: DriverHarness): Promise<void> {
    const port = await freePort();
    const lp = startSidecar('livenessprobe', 'livenessprobe', ['--csi-address', own.socket, '--http-endpoint', `127.0.0.1:${port}`, '--probe-timeout', '1s']);
    const ok = await waitFor('/healthz to answer', async () => running(lp) && (await httpGet(port, '/healthz')), { timeoutMs: 30_000, everyMs: 200 });
    expect(ok).toEqual({ status: 200, body: 'ok' });
    const metrics = await httpGet(port, '/metrics');
    expect(metrics.body).toMatch(new RegExp(`tscsi_csi_operations_total\\{driver="${DRIVER.replaceAll('.', '\\.')}",method="/csi\\.v1\\.Identity/Probe",code="OK"\\} [1-9]`));

    expect(await own.stopProcess('SIGTERM')).toBe(0);
    expect(own.proc!.signalCode).toBeNull();
    const t0 = Date.now();
    const bad = await httpGet(port, '/healthz');
    console.log(`/healthz with the driver stopped: ${bad.status} in ${Date.now() - t0} ms: ${bad.body.trim()}`);
    expect(bad.status).toBe(500);
    expect(bad.body).toMatch(/^Probe failed: rpc error: code = UNAVAILABLE desc = /); // the sidecars' one rpc error format
    expect(logLines(lp).some((x) => x.msg === 'health changed' && x.healthy === false)).toBe(true);
    expect((await env.stop(lp)).code).toBe(0);
  }

  test('leader election: exactly one of two candidates leads; stopping it hands over within the lease duration', { timeout: 3 * MIN }, async () => {
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(env.kubeconfig);
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
    const first = await waitFor('a leader', async () => [a, b].find((e) => e.isLeader()), { timeoutMs: 20_000, everyMs: 50 });
    const second = first === a ? b : a;
    // for 6 s (3 renewals), exactly one leads and the Lease names it
    await holdsFor('exactly one leader', () => [a.isLeader(), b.isLeader()].filter(Boolean).length === 1, 6_000, 200);
    const lease = await api.readNamespacedLease({ name, namespace: 'default' });
    expect(lease.spec?.holderIdentity).toBe(first.identity);
    expect(lease.spec?.leaseDurationSeconds).toBe(15);
    expect(second.leader).toBe(first.identity);

    let t0 = Date.now();
    await first.stop(); // releases the lease
    await waitFor('the other candidate to take over', async () => second.isLeader(), { timeoutMs: 15_000, everyMs: 50 });
    const handover = Date.now() - t0;
    console.log(`leader stopped (lease released) -> other candidate leads in ${handover} ms`);
    expect(handover).toBeLessThan(15_000);
    expect(first.isLeader()).toBe(false);
    expect((await api.readNamespacedLease({ name, namespace: 'default' })).spec).toMatchObject({ holderIdentity: second.identity, leaseTransitions: 1 });
    expect(events).toEqual([`${first.identity}+`, `${first.identity}-`, `${second.identity}+`]);

    // a leader that vanishes without releasing: the next one waits for the lease to expire
    const c = make('candidate-c');
    await holdsFor('candidate-c waiting while the leader renews', () => !c.isLeader(), 3_000);
    t0 = Date.now();
    await second.stop({ release: false });
    let early = false;
    await waitFor('candidate-c to take over the expired lease', async () => {
      if (c.isLeader() && Date.now() - t0 < 8_000) early = true;
      return c.isLeader();
    }, { timeoutMs: 40_000, everyMs: 50 });
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
