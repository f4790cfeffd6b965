// CSI secrets from Kubernetes, as external-provisioner resolves them: a StorageClass names
// a Secret per operation (csi.storage.k8s.io/<op>-secret-name/-namespace, or the default
// csi.storage.k8s.io/secret-name/-namespace), with templates; the provisioner reads the
// provisioner secret for CreateVolume/DeleteVolume and puts the other references on the PV
// (kubelet reads the node ones, the attacher and the resizer the controller ones).
import { k8s, httpStatus } from './kube.js';

export const CO_PREFIX = 'csi.storage.k8s.io/';
export const FSTYPE_KEY = `${CO_PREFIX}fstype`;

export type SecretOp = 'provisioner' | 'controller-publish' | 'node-stage' | 'node-publish' | 'controller-expand' | 'node-expand' | 'controller-modify';
const OPS: SecretOp[] = ['provisioner', 'controller-publish', 'node-stage', 'node-publish', 'controller-expand', 'node-expand', 'controller-modify'];

/** Where the provisioner secret of a PV is kept for DeleteVolume (external-provisioner's annotations). */
export const ANN_DELETION_SECRET_NAME = 'volume.kubernetes.io/provisioner-deletion-secret-name';
export const ANN_DELETION_SECRET_NAMESPACE = 'volume.kubernetes.io/provisioner-deletion-secret-namespace';

const KNOWN_KEYS = new Set([FSTYPE_KEY, `${CO_PREFIX}secret-name`, `${CO_PREFIX}secret-namespace`, ...OPS.flatMap((op) => [`${CO_PREFIX}${op}-secret-name`, `${CO_PREFIX}${op}-secret-namespace`])]);

/**
 * The class parameters the driver gets: every csi.storage.k8s.io/ key is the CO's, and one
 * not in `known` is an error (as in external-provisioner and csi-snapshotter: a typo must not
 * pass silently). Defaults to the StorageClass keys.
 */
export function driverParameters(params: Record<string, string> | undefined, known: ReadonlySet<string> = KNOWN_KEYS): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(params ?? {})) {
    if (!k.startsWith(CO_PREFIX)) out[k] = v;
    else if (!known.has(k)) throw new Error(`found unknown parameter key "${k}" with reserved namespace ${CO_PREFIX}`);
  }
  return out;
}

export interface SecretRef {
  name: string;
  namespace: string;
}

/** The claim fields a template may use. */
export interface ClaimInfo {
  name: string;
  namespace: string;
  annotations?: Record<string, string>;
}

export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** `template` with each ${token} replaced by its value; a token without one is an error. */
export function resolveTemplate(template: string, values: Record<string, string>): string {
  const missing: string[] = [];
  const out = template.replace(/\$\{([^}]*)\}/g, (_, token: string) => {
    if (token in values) return values[token];
    missing.push(token);
    return '';
  });
  if (missing.length) throw new Error(`invalid tokens: ${JSON.stringify(missing)}`);
  return out;
}

/**
 * The Secret a StorageClass names for `op`, or undefined when it names none. Namespace
 * templates may use ${pv.name} and ${pvc.namespace} (neither is the claim user's choice);
 * name templates also ${pvc.name} and ${pvc.annotations['KEY']} — except the provisioner
 * secret, whose claim carries no annotations (as in external-provisioner).
 */
export function secretRef(op: SecretOp, params: Record<string, string> | undefined, pvName: string, claim: ClaimInfo | undefined): SecretRef | undefined {
  const p = params ?? {};
  let nameT = p[`${CO_PREFIX}${op}-secret-name`];
  let nsT = p[`${CO_PREFIX}${op}-secret-namespace`];
  if (nameT === undefined && nsT === undefined) {
    nameT = p[`${CO_PREFIX}secret-name`];
    nsT = p[`${CO_PREFIX}secret-namespace`];
  }
  if (nameT === undefined && nsT === undefined) return undefined;
  if (!nameT || !nsT) throw new Error(`the StorageClass must give both ${CO_PREFIX}${op}-secret-name and -namespace, or neither`);

  const nsValues: Record<string, string> = { 'pv.name': pvName };
  if (claim) nsValues['pvc.namespace'] = claim.namespace;
  let namespace: string;
  try {
    namespace = resolveTemplate(nsT, nsValues);
  } catch (err) {
    throw new Error(`${op} secret namespace ${JSON.stringify(nsT)}: ${(err as Error).message}`, { cause: err });
  }
  if (!DNS1123_LABEL.test(namespace) || namespace.length > 63) throw new Error(`${op} secret namespace ${JSON.stringify(nsT)} resolved to ${JSON.stringify(namespace)}, which is not a valid namespace name`);

  const nameValues: Record<string, string> = { 'pv.name': pvName };
  if (claim) {
    nameValues['pvc.name'] = claim.name;
    nameValues['pvc.namespace'] = claim.namespace;
    if (op !== 'provisioner') for (const [k, v] of Object.entries(claim.annotations ?? {})) nameValues[`pvc.annotations['${k}']`] = v;
  }
  let name: string;
  try {
    name = resolveTemplate(nameT, nameValues);
  } catch (err) {
    throw new Error(`${op} secret name ${JSON.stringify(nameT)}: ${(err as Error).message}`, { cause: err });
  }
  if (!DNS1123_SUBDOMAIN.test(name) || name.length > 253) throw new Error(`${op} secret name ${JSON.stringify(nameT)} resolved to ${JSON.stringify(name)}, which is not a valid Secret name`);
  return { name, namespace };
}

/** The Secret's data as CSI secrets (strings). A missing Secret is an error the caller reports. */
export async function readSecret(core: k8s.CoreV1Api, ref: { name?: string; namespace?: string } | undefined | null): Promise<Record<string, string>> {
  if (!ref?.name || !ref.namespace) return {};
  let s: k8s.V1Secret;
  try {
    s = await core.readNamespacedSecret({ name: ref.name, namespace: ref.namespace });
  } catch (err) {
    // The API client's error stays out of ours (no cause): it carries the whole HTTP exchange.
    // eslint-disable-next-line preserve-caught-error
    if (httpStatus(err) === 404) throw new Error(`secret ${ref.namespace}/${ref.name} not found`);
    // eslint-disable-next-line preserve-caught-error
    throw new Error(`cannot read secret ${ref.namespace}/${ref.name}: ${httpStatus(err) ?? (err as Error).message}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.data ?? {})) out[k] = Buffer.from(v, 'base64').toString('utf8');
  for (const [k, v] of Object.entries(s.stringData ?? {})) out[k] = v;
  return out;
}
