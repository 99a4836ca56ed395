import { createVerify } from "node:crypto";

/** An SNS HTTP(S) delivery, as SNS posts it. */
export interface SnsMessage {
  Type: "Notification" | "SubscriptionConfirmation" | "UnsubscribeConfirmation";
  MessageId: string;
  TopicArn: string;
  Message: string;
  Timestamp: string;
  SignatureVersion: string;
  Signature: string;
  SigningCertURL: string;
  Subject?: string;
  Token?: string;
  SubscribeURL?: string;
}

/** Fetches a text document (the signing certificate, or the SubscribeURL to confirm a subscription). */
export type TextFetcher = (url: string) => Promise<string>;

export class SnsRefused extends Error {}

/** Only SNS's own hosts may serve certificates and confirmation URLs. */
const SNS_HOST = /^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/;

function snsUrl(raw: unknown, what: string): string {
  if (typeof raw !== "string") throw new SnsRefused(`${what} is missing`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SnsRefused(`${what} is not a URL`);
  }
  if (url.protocol !== "https:" || !SNS_HOST.test(url.hostname)) throw new SnsRefused(`${what} ${url.host} is not an SNS https URL`);
  return url.toString();
}

async function defaultFetch(url: string): Promise<string> {
  const res = await fetch(url, { redirect: "error", signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.text();
}

/** The string SNS signs (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html). */
export function snsStringToSign(m: SnsMessage): string {
  const fields: Array<keyof SnsMessage> =
    m.Type === "Notification" ? ["Message", "MessageId", ...(m.Subject !== undefined ? (["Subject"] as const) : []), "Timestamp", "TopicArn", "Type"] : ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"];
  return fields.map((f) => `${f}\n${String(m[f] ?? "")}\n`).join("");
}

/**
 * Verifies SNS deliveries: the topic must be one of ours, the certificate must come from SNS, and the
 * signature (SignatureVersion 1 = SHA1, 2 = SHA256) must match. Confirms subscriptions by visiting
 * their SubscribeURL. Certificates are cached per URL. Fetchers are injectable for tests.
 */
export class SnsVerifier {
  private readonly certificates = new Map<string, Promise<string>>();

  constructor(
    private readonly topics: () => string[],
    private fetchCertificate: TextFetcher = defaultFetch,
    private confirmSubscription: TextFetcher = defaultFetch,
  ) {}

  /** Replaces the fetchers (tests sign with their own key). */
  setFetchers(fetchCertificate: TextFetcher, confirmSubscription: TextFetcher = fetchCertificate): void {
    this.fetchCertificate = fetchCertificate;
    this.confirmSubscription = confirmSubscription;
    this.certificates.clear();
  }

  async verify(body: unknown): Promise<SnsMessage> {
    if (typeof body !== "object" || body === null) throw new SnsRefused("not an SNS message");
    const m = body as SnsMessage;
    if (!["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"].includes(m.Type)) throw new SnsRefused(`unknown SNS message type ${String(m.Type)}`);
    for (const f of ["MessageId", "TopicArn", "Message", "Timestamp", "Signature", "SignatureVersion"] as const) if (typeof m[f] !== "string") throw new SnsRefused(`${f} is missing`);
    if (!this.topics().includes(m.TopicArn)) throw new SnsRefused(`topic ${m.TopicArn} is not one of Diffgate's`);
    const algorithm = m.SignatureVersion === "1" ? "RSA-SHA1" : m.SignatureVersion === "2" ? "RSA-SHA256" : undefined;
    if (!algorithm) throw new SnsRefused(`unknown SignatureVersion ${m.SignatureVersion}`);
    const certUrl = snsUrl(m.SigningCertURL, "SigningCertURL");
    if (m.Type === "SubscriptionConfirmation") snsUrl(m.SubscribeURL, "SubscribeURL");
    let pending = this.certificates.get(certUrl);
    if (!pending) {
      pending = this.fetchCertificate(certUrl);
      this.certificates.set(certUrl, pending);
      pending.catch(() => this.certificates.delete(certUrl));
    }
    const certificate = await pending;
    const ok = createVerify(algorithm).update(snsStringToSign(m), "utf8").verify(certificate, m.Signature, "base64");
    if (!ok) throw new SnsRefused("the SNS signature does not match");
    return m;
  }

  async confirm(m: SnsMessage): Promise<void> {
    await this.confirmSubscription(snsUrl(m.SubscribeURL, "SubscribeURL"));
  }
}
