// README.md's architecture picture (docs/architecture.svg) is generated from
// docs/architecture.dot by Graphviz (`npm run diagram`; .ci/setup installs graphviz). Here it is
// generated again and compared, so the source and the picture never drift apart, and the
// source is checked to name every sidecar the repository has.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const SOURCE = path.join(ROOT, 'docs', 'architecture.dot');
const SVG = path.join(ROOT, 'docs', 'architecture.svg');

describe('the architecture diagram', () => {
  it('docs/architecture.svg is what dot makes of docs/architecture.dot (else: npm run diagram)', async () => {
    const made = (await execa('dot', ['-Tsvg', SOURCE], { stripFinalNewline: false })).stdout;
    expect(made === (await fs.readFile(SVG, 'utf8')), 'docs/architecture.svg is out of date: run npm run diagram and commit it').toBe(true);
  });

  it('names every sidecar and backend, and README.md shows it', async () => {
    const dot = await fs.readFile(SOURCE, 'utf8');
    const sidecars = (await fs.readdir(path.join(ROOT, 'sidecars'), { withFileTypes: true })).filter((e) => e.isDirectory() && e.name !== 'common').map((e) => e.name);
    expect(sidecars.length).toBeGreaterThan(5);
    expect(sidecars.filter((s) => !dot.includes(s))).toEqual([]);
    for (const b of ['loop', 'LVM', 'Ceph RBD', 'csi.sock', 'snapshot-controller', 'kube-apiserver', 'kubelet']) expect(dot).toContain(b);
    expect(await fs.readFile(path.join(ROOT, 'README.md'), 'utf8')).toContain('](docs/architecture.svg)');
  });
});
