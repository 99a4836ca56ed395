import { CreateTrainingJobCommand, DescribeTrainingJobCommand, StopTrainingJobCommand, type CreateTrainingJobCommandInput, type DescribeTrainingJobCommandOutput, type SageMakerClient } from "@aws-sdk/client-sagemaker";
import { SageMakerRequestError, classify } from "./endpoint-provisioner.js";

export type TrainingDescription = DescribeTrainingJobCommandOutput;

/**
 * SageMaker training jobs. Client refusals (4xx but throttling) become SageMakerRequestError;
 * throttling and server faults stay retryable (the job's retry).
 */
export class Trainer {
  constructor(private readonly control: SageMakerClient) {}

  /** "created", or "existed" when a job of that name is already there (ours: the names are deterministic). */
  async create(input: CreateTrainingJobCommandInput): Promise<"created" | "existed"> {
    try {
      await this.control.send(new CreateTrainingJobCommand(input));
      return "created";
    } catch (e) {
      const err = e as { name?: string; message?: string };
      if (err.name === "ResourceInUse" || /already exists/.test(err.message ?? "")) return "existed";
      throw classify("CreateTrainingJob", e);
    }
  }

  /** The job, or undefined when SageMaker does not know it. */
  async describe(name: string): Promise<TrainingDescription | undefined> {
    try {
      return await this.control.send(new DescribeTrainingJobCommand({ TrainingJobName: name }));
    } catch (e) {
      const err = e as { name?: string; message?: string };
      if (err.name === "ResourceNotFound" || /not found|Could not find/i.test(err.message ?? "")) return undefined;
      throw classify("DescribeTrainingJob", e);
    }
  }

  /** Stops the job; one that already ended is not an error ("ended" tells so). */
  async stop(name: string): Promise<"stopping" | "ended"> {
    try {
      await this.control.send(new StopTrainingJobCommand({ TrainingJobName: name }));
      return "stopping";
    } catch (e) {
      const c = classify("StopTrainingJob", e);
      if (c instanceof SageMakerRequestError && /status (Completed|Failed|Stopped|Stopping)/.test(c.message)) return "ended";
      throw c;
    }
  }
}
