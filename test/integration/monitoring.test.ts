// deploy/monitoring/ against what real processes export: each metric the alert rules and the
// dashboard name must be one that a real driver or sidecar exports (names taken from their
// /metrics, not from a list here), and every family the driver exports has a panel.
// monitoring-promtool.test.ts checks the same files' syntax and alert logic with promtool.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverHarness } from '../lib/driver-harness.js';
import { freePort, waitFor } from '../lib/wait.js';
import { scrape, type Scrape } from '../lib/prometheus.js';
import { metricNames, dashboardQueries, ruleExprs } from '../lib/promql.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const MONITORING = path.join(ROOT, 'deploy', 'monitoring');
const RULES = path.join(MONITORING, 'tscsi-alerts.yaml');
const DASHBOARD = path.join(MONITORING, 'tscsi-dashboard.json');

let h: DriverHarness | undefined;
const sidecars: ChildProcess[] = [];
/** Every name a real process exports: the families and, for histograms, their _bucket/_sum/_count. */
const exported = new Set<string>();
/** The families the driver itself exports (each must have a panel). */
let driverFamilies: string[] = [];

function addScrape(s: Scrape): void {
  for (const x of s.samples) exported.add(x.name);
  for (const [family, type] of s.types) {
    exported.add(family);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(family + suffix);
  }
}

/** A sidecar process from dist/, its /metrics on a free port; scraped once it answers. */
async function sidecar(name: string, args: string[], logFile: string): Promise<string> {
  const port = await freePort();
  const log = await fs.open(logFile, 'a');
  const p = spawn(process.execPath, [path.join(ROOT, 'dist', 'sidecars', name, 'main.js'), ...args, `--http-endpoint=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', log.fd] });
  await log.close();
  sidecars.push(p);
  return `http://127.0.0.1:${port}/metrics`;
}

beforeAll(async () => {
  const port = await freePort();
  h = await DriverHarness.start({ driver: { metricsAddress: `127.0.0.1:${port}` } });
  const driverScrape = await scrape(`http://127.0.0.1:${port}/metrics`);
  addScrape(driverScrape);
  driverFamilies = [...driverScrape.types.keys()];

  // The sidecars' metrics: the livenessprobe (CSI call metrics), and a health monitor that
  // runs for leader election against an API server nobody answers at: it serves /metrics
  // while it waits for a Lease it cannot get (so its leader gauge says 0, truthfully).
  const kubeconfig = path.join(h.dir, 'kubeconfig');
  await fs.writeFile(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'none', cluster: { server: 'https://127.0.0.1:1' } }],
      users: [{ name: 'none', user: { token: 'x' } }],
      contexts: [{ name: 'none', context: { cluster: 'none', user: 'none' } }],
      'current-context': 'none',
    }),
  );
  const logFile = path.join(h.dir, 'sidecars.log');
  const urls = [
    await sidecar('livenessprobe', [`--csi-address=${h.socket}`], logFile),
    await sidecar('health-monitor', [`--csi-address=${h.socket}`, `--kubeconfig=${kubeconfig}`, '--leader-election', '--mode=all', '--node-name=it-node'], logFile),
  ];
  const describe = () => fs.readFile(logFile, 'utf8');
  for (const url of urls) {
    // a sidecar's CSI metrics count once it has asked the driver's name (GetPluginInfo)
    addScrape(await waitFor(`${url} to show the sidecar's CSI calls`, async () => {
      const s = await scrape(url);
      return s.samples.some((x) => x.name === 'tscsi_csi_operations_total') && s;
    }, { timeoutMs: 30_000, everyMs: 200, describe }));
  }
}, 120_000);

afterAll(async () => {
  for (const p of sidecars) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGTERM');
    await exited;
  }
  await h?.cleanup();
});

describe('deploy/monitoring alert rules', () => {
  it('name only metrics a real driver or sidecar exports', async () => {
    const exprs = ruleExprs(await fs.readFile(RULES, 'utf8'));
    expect(exprs).toHaveLength(8);
    const named = new Set(exprs.flatMap(metricNames));
    expect([...named].filter((n) => !exported.has(n))).toEqual([]);
    // the alerts cover what the issue asks: pools, RPC errors, abnormal volumes, leaderless sidecars
    for (const n of ['tscsi_pool_free_bytes', 'tscsi_operations_seconds_count', 'tscsi_health_monitor_abnormal_volumes', 'tscsi_leader_election_master_status']) expect(named).toContain(n);
  });
});

describe('deploy/monitoring Grafana dashboard', () => {
  it('names only metrics a real driver or sidecar exports, and shows every family of the driver', async () => {
    const queries = dashboardQueries(JSON.parse(await fs.readFile(DASHBOARD, 'utf8')));
    expect(queries.length).toBeGreaterThan(15);
    const named = new Set(queries.flatMap((q) => (q.labelValuesOf ? [q.labelValuesOf] : metricNames(q.expr))));
    expect([...named].filter((n) => !exported.has(n))).toEqual([]);
    // every family the driver exports is on some panel
    expect(driverFamilies.length).toBeGreaterThan(10);
    expect(driverFamilies.filter((f) => ![...named].some((n) => n === f || ['_bucket', '_sum', '_count'].some((x) => n === f + x)))).toEqual([]);
  });
});
