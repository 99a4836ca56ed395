import { InvokeEndpointAsyncCommand, type SageMakerRuntimeClient } from "@aws-sdk/client-sagemaker-runtime";
import { SageMakerRequestError } from "./endpoint-provisioner.js";

export interface AsyncInvocation {
  endpointName: string;
  /** `s3://bucket/key` of the invocation payload. */
  inputLocation: string;
  /** Diffgate's job id: SageMaker names the output after it and returns it in notifications. */
  inferenceId: string;
  invocationTimeoutSeconds: number;
  requestTtlSeconds: number;
}

/** InvokeEndpointAsync; client-side refusals (4xx but throttling) become SageMakerRequestError, the rest stays retryable. */
export class AsyncInvoker {
  constructor(private readonly runtime: SageMakerRuntimeClient) {}

  async invoke(i: AsyncInvocation): Promise<{ outputLocation: string; failureLocation: string | undefined }> {
    try {
      const out = await this.runtime.send(
        new InvokeEndpointAsyncCommand({
          EndpointName: i.endpointName,
          InputLocation: i.inputLocation,
          InferenceId: i.inferenceId,
          ContentType: "application/json",
          InvocationTimeoutSeconds: i.invocationTimeoutSeconds,
          RequestTTLSeconds: i.requestTtlSeconds,
        }),
      );
      if (!out.OutputLocation) throw new Error("InvokeEndpointAsync returned no OutputLocation");
      return { outputLocation: out.OutputLocation, failureLocation: out.FailureLocation };
    } catch (e) {
      const err = e as { name?: string; message?: string; $fault?: string; $metadata?: { httpStatusCode?: number } };
      const status = err.$metadata?.httpStatusCode ?? 0;
      const throttled = /Throttl|TooManyRequests/.test(err.name ?? "");
      if (err.$fault === "client" && status >= 400 && status < 500 && !throttled) throw new SageMakerRequestError("InvokeEndpointAsync", err.name ?? "ClientError", err.message ?? "refused");
      throw e;
    }
  }
}
