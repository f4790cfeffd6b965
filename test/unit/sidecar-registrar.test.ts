// The registrar's Registration service against a fake kubelet (a gRPC client on its socket).
import { afterEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Registrar } from '../../sidecars/registrar/registrar.js';
import { loadRegistration } from '../../proto/load.js';
import { removeSocket } from '../../lib/socket.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-reg-unit-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function kubelet(socket: string) {
  const Ctor = loadRegistration();
  const c = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure());
  const call = <T>(method: string, req: object) =>
    new Promise<T>((resolve, reject) =>
      (c as unknown as Record<string, (r: object, cb: (e: Error | null, v: T) => void) => void>)[method]!.call(c, req, (e, v) => (e ? reject(e) : resolve(v))),
    );
  return { call, close: () => c.close() };
}

/** A socket file nobody listens on, as a SIGKILLed registrar leaves behind. */
async function staleSocket(p: string): Promise<void> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(p, r));
  // a hard link keeps the socket inode when the server's close unlinks the original
  fs.linkSync(p, p + '.keep');
  await new Promise<void>((r) => srv.close(() => r()));
  fs.renameSync(p + '.keep', p);
}

describe('registrar', () => {
  it('answers GetInfo with the driver, the kubelet-side endpoint and 1.0.0; records the status', async () => {
    const dir = tmp();
    const r = new Registrar({ driverName: 'csi.tscsi.dev', kubeletRegistrationPath: '/var/lib/kubelet/plugins/csi.tscsi.dev/csi.sock', pluginRegistrationDir: dir, log });
    await r.start();
    expect(r.socketPath).toBe(path.join(dir, 'csi.tscsi.dev-reg.sock'));
    expect(fs.lstatSync(r.socketPath).isSocket()).toBe(true);
    // as the driver's CSI socket (lib/socket.ts): only root may connect
    expect(fs.lstatSync(r.socketPath).mode & 0o777).toBe(0o600);
    const k = kubelet(r.socketPath);
    try {
      expect(await k.call('GetInfo', {})).toEqual({
        type: 'CSIPlugin',
        name: 'csi.tscsi.dev',
        endpoint: '/var/lib/kubelet/plugins/csi.tscsi.dev/csi.sock',
        supported_versions: ['1.0.0'],
      });
      expect(await r.problem()).toBeUndefined();
      expect(await k.call('NotifyRegistrationStatus', { plugin_registered: true })).toEqual({});
      expect(r.status).toEqual({ plugin_registered: true, error: '' });
    } finally {
      k.close();
      await r.stop();
    }
    expect(fs.existsSync(r.socketPath)).toBe(false);
  });

  it('calls onRegistrationFailed when kubelet reports a failure, and /healthz reason says so', async () => {
    const dir = tmp();
    let failed: string | undefined;
    const r = new Registrar({ driverName: 'd', kubeletRegistrationPath: '/x/csi.sock', pluginRegistrationDir: dir, log, onRegistrationFailed: (e) => (failed = e) });
    await r.start();
    const k = kubelet(r.socketPath);
    try {
      await k.call('NotifyRegistrationStatus', { plugin_registered: false, error: 'bad version' });
      await new Promise((res) => setTimeout(res, 20));
      expect(failed).toBe('bad version');
      expect(await r.problem()).toMatch(/bad version/);
    } finally {
      k.close();
      await r.stop();
    }
  });

  it('replaces a stale socket at start but never a file that is not a socket', async () => {
    const dir = tmp();
    const p = path.join(dir, 'd-reg.sock');
    await staleSocket(p);
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    const r = new Registrar({ driverName: 'd', kubeletRegistrationPath: '/x/csi.sock', pluginRegistrationDir: dir, log });
    await r.start();
    const k = kubelet(p);
    try {
      expect((await k.call<{ name: string }>('GetInfo', {})).name).toBe('d');
    } finally {
      k.close();
      await r.stop();
    }
    fs.writeFileSync(p, 'not a socket');
    await expect(removeSocket(p)).rejects.toThrow(/not a socket/);
    await expect(new Registrar({ driverName: 'd', kubeletRegistrationPath: '/x/csi.sock', pluginRegistrationDir: dir, log }).start()).rejects.toThrow(/not a socket/);
    expect(fs.readFileSync(p, 'utf8')).toBe('not a socket');
  });

  it('refuses a relative kubelet path and a driver name that cannot name a file', () => {
    expect(() => new Registrar({ driverName: 'd', kubeletRegistrationPath: 'csi.sock', pluginRegistrationDir: '/tmp', log })).toThrow(/absolute/);
    expect(() => new Registrar({ driverName: '../x', kubeletRegistrationPath: '/csi.sock', pluginRegistrationDir: '/tmp', log })).toThrow(/socket file/);
  });
});
