// Immediate binding on a node-local backend: whether a node's provisioner may take a claim
// (inside the class's allowedTopologies, enough capacity), what it keeps about the claims it
// did not take and how often it looks at them again, and a class nobody serves: pure decisions.
import { describe, it, expect } from 'vitest';
import { topologyProblem, capacityProblem, ClaimVerdicts, FIRST_LOOK_AGAIN_MS, MAX_LOOK_AGAIN_MS } from '../../sidecars/provisioner/immediate.js';
import { unservedBackendProblem } from '../../sidecars/provisioner/unserved.js';

const K = 'topology.tscsi.dev/node';
const sc = (allowedTopologies?: Array<{ matchLabelExpressions: Array<{ key: string; values: string[] }> }>) => ({ metadata: { name: 'sc' }, provisioner: 'csi.tscsi.dev', allowedTopologies });

describe('a node takes an Immediate claim', () => {
  it('anywhere when the class has no allowedTopologies', () => {
    expect(topologyProblem(sc(), 'n1', { [K]: 'n1' })).toBeUndefined();
    expect(topologyProblem(sc([]), 'n1', {})).toBeUndefined();
  });

  it('inside allowedTopologies: terms ORed, the expressions of a term ANDed', () => {
    const two = sc([{ matchLabelExpressions: [{ key: K, values: ['n1', 'n2'] }, { key: 'zone', values: ['a'] }] }, { matchLabelExpressions: [{ key: K, values: ['n3'] }] }]);
    expect(topologyProblem(two, 'n1', { [K]: 'n1', zone: 'a' })).toBeUndefined();
    expect(topologyProblem(two, 'n3', { [K]: 'n3' })).toBeUndefined();
    expect(topologyProblem(two, 'n2', { [K]: 'n2', zone: 'b' })).toBe(`node n2 is outside the StorageClass's allowedTopologies (${K} in [n1, n2] and zone in [a] or ${K} in [n3])`);
    // a label the node lacks is not a match
    expect(topologyProblem(two, 'n1', { [K]: 'n1' })).toMatch(/^node n1 is outside/);
  });

  it('with room for the claim: free bytes and the largest volume both at least the request', () => {
    expect(capacityProblem('n1', 100n, { available: 100n })).toBeUndefined();
    expect(capacityProblem('n1', 100n, { available: 200n, maximum: 100n })).toBeUndefined();
    expect(capacityProblem('n1', 101n, { available: 100n })).toBe('node n1 has 100 bytes free for this StorageClass, the claim asks for 101');
    expect(capacityProblem('n1', 150n, { available: 200n, maximum: 100n })).toBe('node n1 holds volumes of at most 100 bytes of this StorageClass, the claim asks for 150');
  });
});

describe('a node\'s memory of the Immediate claims it did not take', () => {
  const claimOf = (uid: string, rv = '1') => ({ metadata: { name: 'c', namespace: 'ns', uid, resourceVersion: rv } });
  const classOf = (rv = '7') => ({ metadata: { name: 'sc', resourceVersion: rv }, provisioner: 'csi.tscsi.dev' });
  const TOO_BIG = 'node n1 has 100 bytes free for this StorageClass, the claim asks for 101';
  const clock = () => {
    const c = { t: 1_000_000, now: () => c.t };
    return c;
  };

  it('a lasting no is not looked at again on every resync: only once due, with the wait doubling up to a bound', () => {
    const c = clock();
    const v = new ClaimVerdicts(c.now);
    const [pvc, sc] = [claimOf('u1'), classOf()];
    expect(v.standing('ns/c', pvc, sc)).toBeUndefined(); // never looked: look
    expect(v.found('ns/c', pvc, sc, TOO_BIG, true)).toBe(true); // new: said
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      const since = c.t;
      c.t += 1;
      expect(v.standing('ns/c', pvc, sc)).toBe(TOO_BIG); // a resync right after: no look
      while (v.standing('ns/c', pvc, sc) !== undefined) c.t += 1000;
      waits.push(c.t - since - 1);
      expect(v.found('ns/c', pvc, sc, TOO_BIG, true)).toBe(false); // the same: not said again
    }
    expect(waits.slice(0, 3)).toEqual([FIRST_LOOK_AGAIN_MS, 2 * FIRST_LOOK_AGAIN_MS, 4 * FIRST_LOOK_AGAIN_MS]);
    expect(Math.max(...waits)).toBe(MAX_LOOK_AGAIN_MS);
  });

  it('looks again at once when the claim, its class or this node\'s volumes change', () => {
    const v = new ClaimVerdicts(clock().now);
    v.found('ns/c', claimOf('u1'), classOf(), TOO_BIG, true);
    expect(v.standing('ns/c', claimOf('u1'), classOf())).toBe(TOO_BIG);
    expect(v.standing('ns/c', claimOf('u1', '2'), classOf())).toBeUndefined();
    expect(v.standing('ns/c', claimOf('u1'), classOf('8'))).toBeUndefined();
    expect(v.standing('ns/c', claimOf('u2'), classOf())).toBeUndefined(); // recreated under the same name
    v.capacityChanged();
    expect(v.standing('ns/c', claimOf('u1'), classOf())).toBeUndefined();
  });

  it('a passing problem (driver not registered yet, capacity unknown) is looked at on every resync', () => {
    const v = new ClaimVerdicts(clock().now);
    const why = 'driver csi.tscsi.dev is not registered on node n1 (no CSINode entry)';
    expect(v.found('ns/c', claimOf('u1'), classOf(), why, false)).toBe(true);
    expect(v.standing('ns/c', claimOf('u1'), classOf())).toBeUndefined();
    expect(v.found('ns/c', claimOf('u1'), classOf(), why, false)).toBe(false); // still said once
  });

  it('keeps nothing of claims bound, deleted or recreated: forget() empties it, and a new UID under a name starts afresh', () => {
    const c = clock();
    const v = new ClaimVerdicts(c.now);
    for (let i = 0; i < 100; i++) v.found(`ns/c${i}`, claimOf(`u${i}`), classOf(), TOO_BIG, true);
    v.standAside('ns/given-back', 'g1');
    expect(v.size).toBe(101);
    for (let i = 0; i < 100; i++) v.forget(`ns/c${i}`);
    v.forget('ns/given-back');
    expect(v.size).toBe(0);
    // standing aside: for the claim it gave back, not for another claim of that name, and only for a while
    v.standAside('ns/c', 'u1');
    expect(v.standsAside('ns/c', 'u1')).toBe(true);
    expect(v.standsAside('ns/c', 'u2')).toBe(false);
    expect(v.found('ns/c', claimOf('u2'), classOf(), TOO_BIG, true)).toBe(true); // u2 replaced u1's entry
    expect(v.standsAside('ns/c', 'u1')).toBe(false);
    expect(v.size).toBe(1);
    v.standAside('ns/d', 'u3');
    c.t += 60_000;
    expect(v.standsAside('ns/d', 'u3')).toBe(false);
  });
});

describe('a claim whose class names a backend the driver does not have', () => {
  const scope = { driverName: 'csi.tscsi.dev', defaultBackend: 'loop', backends: new Set(['loop', 'lvm']) };
  const sc = (parameters: Record<string, string>, provisioner = 'csi.tscsi.dev') => ({ metadata: { name: 'fast' }, provisioner, parameters });

  it('is told that nobody provisions it, and how to fix it', () => {
    expect(unservedBackendProblem(scope, sc({ backend: 'lvn' }))).toBe(
      'StorageClass "fast" names backend "lvn", which csi.tscsi.dev does not have (its backends: loop, lvm, rbd): no provisioner takes this claim; fix the class\'s "backend" parameter (a class cannot be edited: make a new one) and claim again',
    );
  });

  it('a backend another provisioner serves, or another driver\'s class, is not this node\'s to speak of', () => {
    expect(unservedBackendProblem(scope, sc({ backend: 'rbd' }))).toBeUndefined();
    expect(unservedBackendProblem(scope, sc({}))).toBeUndefined();
    expect(unservedBackendProblem(scope, sc({ backend: 'lvn' }, 'other.csi.example'))).toBeUndefined();
  });
});
