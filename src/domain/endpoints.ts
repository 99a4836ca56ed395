/** Endpoint types, sizes and states (upstream-contract §3.3, §4.2). */
export const ENDPOINT_TYPES = ["Async", "Real-time"] as const;
export type EndpointType = (typeof ENDPOINT_TYPES)[number];

/** The GPU sizes the seed document and the WebUI extension offer. */
export const ENDPOINT_INSTANCE_TYPES = [
  "ml.g4dn.xlarge",
  "ml.g4dn.2xlarge",
  "ml.g4dn.4xlarge",
  "ml.g4dn.8xlarge",
  "ml.g4dn.12xlarge",
  "ml.g5.xlarge",
  "ml.g5.2xlarge",
  "ml.g5.4xlarge",
  "ml.g5.8xlarge",
  "ml.g5.12xlarge",
  "ml.g5.24xlarge",
] as const;
export type EndpointInstanceType = (typeof ENDPOINT_INSTANCE_TYPES)[number];

/** Who runs an endpoint's jobs: a SageMaker endpoint Diffgate deployed, or a self-hosted WebUI server (`/sdapi/v1`). */
export const ENDPOINT_PROVIDERS = ["sagemaker", "webui"] as const;
export type EndpointProvider = (typeof ENDPOINT_PROVIDERS)[number];

export const ENDPOINT_STATUSES = ["Creating", "InService", "Updating", "Deleting", "Deleted", "Failed"] as const;
export type EndpointStatus = (typeof ENDPOINT_STATUSES)[number];

/** The only status changes allowed; anything else is a bug or a stale job, and is refused. */
const TRANSITIONS: Record<EndpointStatus, readonly EndpointStatus[]> = {
  Creating: ["InService", "Failed", "Deleting"],
  InService: ["Updating", "Deleting", "Failed", "Deleted"],
  Updating: ["InService", "Deleting", "Failed", "Deleted"],
  Failed: ["Deleting", "Deleted"],
  Deleting: ["Deleted"],
  Deleted: [],
};

/**
 * A self-hosted WebUI server goes out of service when its health check fails and comes back when it
 * answers again; it has no Updating and no cloud resources to wait for when deleted.
 */
const WEBUI_TRANSITIONS: Record<EndpointStatus, readonly EndpointStatus[]> = {
  Creating: ["InService", "Failed", "Deleting"],
  InService: ["Failed", "Deleting"],
  Updating: [],
  Failed: ["InService", "Deleting"],
  Deleting: ["Deleted"],
  Deleted: [],
};

export function canTransition(from: EndpointStatus, to: EndpointStatus, provider: EndpointProvider = "sagemaker"): boolean {
  return from === to || (provider === "webui" ? WEBUI_TRANSITIONS : TRANSITIONS)[from].includes(to);
}

export const MAX_INSTANCES = 6;
/** The production variant name Diffgate gives its endpoints. */
export const VARIANT_NAME = "prod";

/** SageMaker resource names for an endpoint (upstream's scheme: esd-<type>-<name>). */
export function sagemakerNames(type: EndpointType, shortName: string) {
  const t = type.toLowerCase();
  return { endpoint: `esd-${t}-${shortName}`, model: `esd-model-${t}-${shortName}`, config: `esd-config-${t}-${shortName}` };
}

/** Per-endpoint names of the autoscaling pieces (upstream shared one alarm name across endpoints, §12.30). */
export function scalingNames(endpointName: string) {
  return {
    resourceId: `endpoint/${endpointName}/variant/${VARIANT_NAME}`,
    targetTrackingPolicy: `${endpointName}-backlog-per-instance`,
    wakePolicy: `${endpointName}-wake-from-zero`,
    wakeAlarm: `${endpointName}-has-backlog-without-capacity`,
  };
}

/** Where an async endpoint writes its results: SageMaker names them after the InferenceId (§7). */
export function asyncOutputLocations(bucket: string, endpointName: string) {
  const outputPath = `s3://${bucket}/sagemaker_output/${endpointName}/`;
  const failurePath = `${outputPath}failure/`;
  return {
    outputPath,
    failurePath,
    output: (inferenceId: string) => `${outputPath}${inferenceId}.out`,
    failure: (inferenceId: string) => `${failurePath}${inferenceId}-error.out`,
  };
}

/** The name Diffgate gives a registered WebUI server (webui-<name>), next to SageMaker's esd-<type>-<name>. */
export function webUiEndpointName(shortName: string): string {
  return `webui-${shortName}`;
}
