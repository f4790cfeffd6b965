// The sidecars' HTTP helper and the liveness probe's check, against a fake CSI Identity server;
// the controller sidecars' /healthz against the real driver's Identity service.
import { afterEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseHostPort, serveHttp, healthz, metrics, type HttpServer } from '../../sidecars/common/http.js';
import { Registry, CsiCallMetrics } from '../../sidecars/common/metrics.js';
import { parseDuration } from '../../sidecars/common/duration.js';
import { probeDriver } from '../../sidecars/common/driver.js';
import { serveControllerHttp } from '../../sidecars/common/run.js';
import { CsiServer } from '../../driver/server.js';
import { IdentityService } from '../../driver/identity.js';
import { startServices } from './service-harness.js';
import { pino } from 'pino';
import { loadCsi } from '../../proto/load.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function get(s: HttpServer, p: string, method = 'GET') {
  const r = await fetch(`http://127.0.0.1:${s.address.port}${p}`, { method });
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
}

describe('parseHostPort', () => {
  it('takes host:port, [v6]:port, :port and port', () => {
    expect(parseHostPort('127.0.0.1:9808')).toEqual({ host: '127.0.0.1', port: 9808 });
    expect(parseHostPort('[::1]:9808')).toEqual({ host: '::1', port: 9808 });
    // deploy/base/node.yaml writes [$(POD_IP)]:PORT so that an IPv6 pod IP works; an IPv4 one must too
    expect(parseHostPort('[10.0.0.7]:9810')).toEqual({ host: '10.0.0.7', port: 9810 });
    expect(parseHostPort(':9809')).toEqual({ host: undefined, port: 9809 });
    expect(parseHostPort('0')).toEqual({ host: undefined, port: 0 });
    expect(parseHostPort('localhost:1')).toEqual({ host: 'localhost', port: 1 });
  });
  it('refuses the rest', () => {
    for (const bad of ['', 'host', 'h:x', 'h:70000', '::1:80', 'h:-1']) expect(() => parseHostPort(bad), bad).toThrow();
  });
});

describe('serveHttp', () => {
  it('serves /healthz and /metrics; 404 elsewhere, 405 for POST, 500 with the reason', async () => {
    let reason: string | undefined;
    const reg = new Registry();
    reg.counter('x_total', 'X.').inc();
    const s = await serveHttp('127.0.0.1:0', { '/healthz': healthz(() => reason), '/metrics': metrics(reg), '/boom': () => { throw new Error('kaput'); } });
    cleanups.push(() => s.close());
    expect(s.address.port).toBeGreaterThan(0);
    expect(await get(s, '/healthz')).toMatchObject({ status: 200, body: 'ok' });
    reason = 'driver gone';
    expect(await get(s, '/healthz?verbose=1')).toMatchObject({ status: 500, body: 'driver gone\n' });
    const m = await get(s, '/metrics');
    expect(m).toMatchObject({ status: 200, type: 'text/plain; version=0.0.4; charset=utf-8' });
    expect(m.body).toContain('x_total 1\n');
    expect((await get(s, '/nope')).status).toBe(404);
    expect((await get(s, '/healthz', 'POST')).status).toBe(405);
    expect(await get(s, '/boom')).toMatchObject({ status: 500, body: 'kaput\n' });
    expect((await get(s, '/healthz', 'HEAD')).status).toBe(500);
  });
});

describe('liveness probe check', () => {
  it('parses durations', () => {
    expect(parseDuration('1s')).toBe(1000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('2')).toBe(2000);
    for (const bad of ['', 's', '1x', '1s2']) expect(() => parseDuration(bad), bad).toThrow();
  });

  async function fakeDriver(probe: (cb: grpc.sendUnaryData<object>) => void): Promise<string> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-lp-unit-'));
    const sock = path.join(dir, 'csi.sock');
    const server = new grpc.Server();
    const identity = loadCsi().csi.v1.Identity as unknown as grpc.ServiceClientConstructor;
    server.addService(identity.service, {
      Probe: (_: unknown, cb: grpc.sendUnaryData<object>) => probe(cb),
      GetPluginInfo: (_: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { name: 'fake.csi', vendor_version: '1' }),
    });
    await new Promise<void>((res, rej) => server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
    cleanups.push(() => {
      server.forceShutdown();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    return sock;
  }

  it('is healthy when Probe answers (ready unset or true), not when ready is false, slow or gone', async () => {
    const m = new CsiCallMetrics(new Registry(), 'fake.csi');
    let mode: 'unset' | 'true' | 'false' | 'slow' | 'error' = 'unset';
    const sock = await fakeDriver((cb) => {
      if (mode === 'unset') cb(null, {});
      else if (mode === 'true') cb(null, { ready: { value: true } });
      else if (mode === 'false') cb(null, { ready: { value: false } });
      else if (mode === 'error') cb({ code: grpc.status.FAILED_PRECONDITION, details: 'state dir missing' } as grpc.ServiceError, null);
      else setTimeout(() => cb(null, {}), 1500);
    });
    expect(await probeDriver(sock, 1000, m)).toBeUndefined();
    mode = 'true';
    expect(await probeDriver(sock, 1000, m)).toBeUndefined();
    mode = 'false';
    expect(await probeDriver(sock, 1000, m)).toBe('driver reports not ready');
    mode = 'error';
    expect(await probeDriver(sock, 1000, m)).toBe('Probe failed: rpc error: code = FAILED_PRECONDITION desc = state dir missing');
    mode = 'slow';
    expect(await probeDriver(sock, 200, m)).toMatch(/^Probe failed: rpc error: code = DEADLINE_EXCEEDED/);
    expect(await probeDriver('/nonexistent/csi.sock', 1000, m)).toMatch(/^Probe failed: rpc error: code = UNAVAILABLE/);
    expect(m.operations.get({ driver: 'fake.csi', method: '/csi.v1.Identity/Probe', code: 'OK' })).toBe(3);
    expect(m.operations.get({ driver: 'fake.csi', method: '/csi.v1.Identity/Probe', code: 'DEADLINE_EXCEEDED' })).toBe(1);
  });
});

describe('controller sidecars /healthz', () => {
  it('fails while the driver is gone and passes again as soon as a new driver serves the socket', async () => {
    const h = await startServices();
    const socket = path.join(h.dir, 'csi.sock');
    let restarted: CsiServer | undefined;
    cleanups.push(async () => {
      await restarted?.shutdown(1_000);
      await h.close();
    });
    const m = new CsiCallMetrics(new Registry(), 'csi.test');
    const s = await serveControllerHttp('127.0.0.1:0', socket, m, pino({ level: 'silent' }));
    cleanups.push(() => s.close());

    expect(await get(s, '/healthz')).toMatchObject({ status: 200, body: 'ok' });
    await h.server.shutdown(1_000); // the driver goes away: its socket is removed
    const gone = await get(s, '/healthz');
    expect(gone.status).toBe(500);
    expect(gone.body).toMatch(/^Probe failed: rpc error: code = UNAVAILABLE/);

    // A new driver on the same socket, as after a container restart: a connection kept from
    // before would sit in gRPC's reconnect back-off and fail this check for seconds.
    restarted = new CsiServer({ identity: new IdentityService(h.ctx, [h.dir]) }, pino({ level: 'silent' }));
    await restarted.listen(`unix://${socket}`);
    expect(await get(s, '/healthz')).toMatchObject({ status: 200, body: 'ok' });
    expect(m.operations.get({ driver: 'csi.test', method: '/csi.v1.Identity/Probe', code: 'OK' })).toBe(2);
  });
});
