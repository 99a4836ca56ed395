import { GraphQLJSONObject } from "graphql-scalars";
import { Arg, Ctx, Field, Float, ID, InputType, Int, Mutation, ObjectType, Query, Resolver, Root, Subscription } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";
import type { MergeView, ModelView } from "../src/services/model-service.js";
import type { TrainingUploadUrl, TrainingView } from "../src/services/training-service.js";
import type { UploadTicket } from "../src/services/checkpoint-service.js";
import { JobEventType, toJobEventType } from "./job-event.resolver.js";

@ObjectType("Model", { description: "A Dreambooth working model made from a Stable-diffusion checkpoint by the utility endpoint" })
export class ModelType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String)
  modelType!: string;

  @Field(() => String, { description: "Initial, Creating, Complete or Fail" })
  status!: string;

  @Field(() => ID, { description: "The source checkpoint" })
  checkpointId!: string;

  @Field(() => GraphQLJSONObject, { description: "Upstream's params (create_model_params …)" })
  params!: Record<string, unknown>;

  @Field(() => String, { nullable: true, description: "The utility endpoint that creates it" })
  endpointName!: string | null;

  @Field(() => String, { description: "Where the created model is (s3://…/output)" })
  outputLocation!: string;

  @Field(() => [String], { description: "Object keys of what the endpoint wrote there" })
  outputKeys!: string[];

  @Field(() => GraphQLJSONObject, { nullable: true, description: "The endpoint's message (response, config_dict)" })
  result!: Record<string, unknown> | null;

  @Field(() => String, { nullable: true })
  failureReason!: string | null;

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  completedAt!: Date | null;
}

@ObjectType("ModelUploadTicket", { description: "Where to PUT the parts of the model's source checkpoint file" })
class ModelUploadTicketType {
  @Field(() => String)
  fileName!: string;

  @Field(() => String)
  key!: string;

  @Field(() => String)
  uploadId!: string;

  @Field(() => [String], { description: "Presigned UploadPart URLs, part 1 first" })
  partUrls!: string[];
}

@ObjectType("ModelCreation")
class ModelCreationType {
  @Field(() => ModelType)
  model!: ModelType;

  @Field(() => [ModelUploadTicketType], { description: "Empty when made from an existing checkpoint" })
  uploads!: ModelUploadTicketType[];
}

@InputType()
class ModelFileInput {
  @Field(() => String)
  name!: string;

  @Field(() => Int)
  partsNumber!: number;
}

@InputType()
class CreateModelInput {
  @Field(() => String, { description: "A letter, then letters, digits, _ or - (at most 40)" })
  name!: string;

  @Field(() => ID, { nullable: true, description: "An Active Stable-diffusion checkpoint you may use" })
  checkpointId?: string;

  @Field(() => [ModelFileInput], { nullable: true, description: "Or one checkpoint file to upload" })
  files?: ModelFileInput[];

  @Field(() => GraphQLJSONObject, { nullable: true, description: "Upstream's params: {create_model_params: {new_model_name, ckpt_path, …}}" })
  params?: Record<string, unknown>;
}

@ObjectType("Training", { description: "A SageMaker training job of a model" })
export class TrainingType {
  @Field(() => ID)
  id!: string;

  @Field(() => String, { description: "The output checkpoint's type: Stable-diffusion or Lora" })
  trainType!: string;

  @Field(() => ID)
  modelId!: string;

  @Field(() => String)
  modelName!: string;

  @Field(() => String, { description: "Initial, Starting, Training, Stopping, Complete, Fail or Stopped" })
  status!: string;

  @Field(() => String, { nullable: true, description: "SageMaker's SecondaryStatus" })
  secondaryStatus!: string | null;

  @Field(() => String)
  sagemakerJobName!: string;

  @Field(() => String)
  instanceType!: string;

  @Field(() => GraphQLJSONObject)
  params!: Record<string, unknown>;

  @Field(() => [String])
  datasets!: string[];

  @Field(() => [String])
  inputFiles!: string[];

  @Field(() => String)
  inputLocation!: string;

  @Field(() => String)
  outputLocation!: string;

  @Field(() => Boolean)
  spot!: boolean;

  @Field(() => GraphQLJSONObject, { nullable: true, description: "Latest epoch, step, loss" })
  metrics!: Record<string, number> | null;

  @Field(() => String, { nullable: true })
  artifactUri!: string | null;

  @Field(() => ID, { nullable: true, description: "The checkpoint registered from the artifact" })
  checkpointId!: string | null;

  @Field(() => String, { nullable: true, description: "SageMaker's FailureReason, or why it failed" })
  failureReason!: string | null;

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  startedAt!: Date | null;

  @Field(() => Date, { nullable: true })
  completedAt!: Date | null;
}

@ObjectType("TrainingUploadUrl")
class TrainingUploadUrlType {
  @Field(() => String)
  filename!: string;

  @Field(() => String)
  key!: string;

  @Field(() => String, { description: "Presigned PUT URL" })
  url!: string;
}

@ObjectType("TrainingCreation")
class TrainingCreationType {
  @Field(() => TrainingType)
  training!: TrainingType;

  @Field(() => [TrainingUploadUrlType])
  uploads!: TrainingUploadUrlType[];
}

@InputType()
class CreateTrainingInput {
  @Field(() => String, { description: "Stable-diffusion or Lora" })
  trainType!: string;

  @Field(() => ID, { description: "A Complete model you may use" })
  modelId!: string;

  @Field(() => [String], { nullable: true, description: "Enabled datasets (names) to train on" })
  datasets?: string[];

  @Field(() => [String], { nullable: true, description: "Enabled datasets of class (regularisation) images" })
  classDatasets?: string[];

  @Field(() => [String], { nullable: true, description: "Input files to upload (tar, json, yaml …)" })
  filenames?: string[];

  @Field(() => String, { nullable: true, description: "One of TRAINING_INSTANCE_TYPES" })
  instanceType?: string;

  @Field(() => Boolean, { nullable: true, description: "Managed spot training (with checkpoints in S3)" })
  spot?: boolean;

  @Field(() => GraphQLJSONObject, { nullable: true, description: "Upstream's params: {training_params, config_params}" })
  params?: Record<string, unknown>;
}

@InputType()
class TrainingFilter {
  @Field(() => [String], { nullable: true })
  statuses?: string[];

  @Field(() => [String], { nullable: true })
  types?: string[];
}

@ObjectType("CheckpointMerge", { description: "A merge of two or three checkpoints run on an endpoint" })
export class MergeType {
  @Field(() => ID)
  id!: string;

  @Field(() => String, { description: "Queued, Merging, Complete or Fail" })
  status!: string;

  @Field(() => [String], { description: "The merged checkpoints' file names: primary, secondary, tertiary" })
  checkpoints!: string[];

  @Field(() => String)
  method!: string;

  @Field(() => Float)
  ratio!: number;

  @Field(() => String, { description: "The file name of the result" })
  resultName!: string;

  @Field(() => String, { nullable: true })
  endpointName!: string | null;

  @Field(() => ID, { nullable: true, description: "The new checkpoint, once Complete" })
  checkpointId!: string | null;

  @Field(() => String, { nullable: true })
  failureReason!: string | null;

  @Field(() => Date)
  createdAt!: Date;

  @Field(() => Date, { nullable: true })
  completedAt!: Date | null;
}

@InputType()
class MergeCheckpointsInput {
  @Field(() => [String], { description: "Two or three Active Stable-diffusion checkpoint file names" })
  checkpoints!: string[];

  @Field(() => String, { nullable: true, description: "Weighted sum (2), Add difference (3) or No interpolation (2)" })
  method?: string;

  @Field(() => Float, { nullable: true, description: "0..1 (default 0.3)" })
  ratio?: number;

  @Field(() => String, { nullable: true, description: "The result's name (without extension)" })
  name?: string;

  @Field(() => String, { nullable: true, description: "safetensors (default) or ckpt" })
  format?: string;

  @Field(() => Boolean, { nullable: true })
  saveAsHalf?: boolean;

  @Field(() => String, { nullable: true, description: "An Async endpoint; MODEL_UTILITY_ENDPOINT by default" })
  endpointName?: string;
}

const toModel = (v: ModelView) => Object.assign(new ModelType(), v);
const toTraining = (v: TrainingView) => Object.assign(new TrainingType(), v);
const toMerge = (v: MergeView) => Object.assign(new MergeType(), v);
const toTicket = (u: UploadTicket) => Object.assign(new ModelUploadTicketType(), u);
const toUrl = (u: TrainingUploadUrl) => Object.assign(new TrainingUploadUrlType(), u);

@Resolver()
export class TrainingResolver {
  @Query(() => [ModelType], { description: "Models the caller may see, newest first" })
  async models(@Ctx() ctx: GraphQLContext, @Arg("statuses", () => [String], { nullable: true }) statuses?: string[] | null): Promise<ModelType[]> {
    return (await ctx.runtime.models.list(await ctx.principal(), statuses ? { statuses } : {})).map(toModel);
  }

  @Query(() => ModelType)
  async model(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<ModelType> {
    return toModel(await ctx.runtime.models.view(await ctx.principal(), id));
  }

  @Mutation(() => ModelCreationType, { description: "Creates an Initial model (from an existing checkpoint, or with part URLs for uploading one); then startModelCreation" })
  async createModel(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateModelInput) input: CreateModelInput): Promise<ModelCreationType> {
    const out = await ctx.runtime.models.create(await ctx.principal(), withoutNulls({ ...input, ...(input.files ? { files: input.files.map((f) => ({ ...f })) } : {}) }));
    return Object.assign(new ModelCreationType(), { model: toModel(out.model), uploads: out.uploads.map(toTicket) });
  }

  @Mutation(() => ModelType, { description: "Completes the source upload (parts: {file: [ETag, …]}) if any, and runs the creation on the utility endpoint" })
  async startModelCreation(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string, @Arg("parts", () => GraphQLJSONObject, { nullable: true }) parts?: Record<string, unknown> | null): Promise<ModelType> {
    return toModel(await ctx.runtime.models.setStatus(await ctx.principal(), id, "Creating", parts ?? undefined));
  }

  @Mutation(() => [ID], { description: "Deletes models and their own objects (the source checkpoint stays)" })
  async deleteModels(@Ctx() ctx: GraphQLContext, @Arg("ids", () => [ID]) ids: string[]): Promise<string[]> {
    return ctx.runtime.models.deleteModels(await ctx.principal(), ids);
  }

  @Query(() => [TrainingType], { description: "Trainings the caller may see, newest first" })
  async trainings(@Ctx() ctx: GraphQLContext, @Arg("filter", () => TrainingFilter, { nullable: true }) filter?: TrainingFilter | null): Promise<TrainingType[]> {
    return (await ctx.runtime.trainings.list(await ctx.principal(), filter ? withoutNulls({ ...filter }) : {})).map(toTraining);
  }

  @Query(() => TrainingType)
  async training(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<TrainingType> {
    return toTraining(await ctx.runtime.trainings.view(await ctx.principal(), id));
  }

  @Mutation(() => TrainingCreationType, { description: "Creates an Initial training; PUT input files to their URLs, then startTraining" })
  async createTraining(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateTrainingInput) input: CreateTrainingInput): Promise<TrainingCreationType> {
    const out = await ctx.runtime.trainings.create(await ctx.principal(), withoutNulls({ ...input }));
    return Object.assign(new TrainingCreationType(), { training: toTraining(out.training), uploads: out.uploads.map(toUrl) });
  }

  @Mutation(() => TrainingType, { description: "Starts the SageMaker training job (repeatable: one job per training)" })
  async startTraining(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<TrainingType> {
    return toTraining(await ctx.runtime.trainings.start(await ctx.principal(), id));
  }

  @Mutation(() => TrainingType, { description: "Stops the training (StopTrainingJob once SageMaker has it)" })
  async stopTraining(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<TrainingType> {
    return toTraining(await ctx.runtime.trainings.stop(await ctx.principal(), id));
  }

  @Mutation(() => [ID], { description: "Deletes finished trainings and their own objects (models and produced checkpoints stay)" })
  async deleteTrainings(@Ctx() ctx: GraphQLContext, @Arg("ids", () => [ID]) ids: string[]): Promise<string[]> {
    return ctx.runtime.trainings.delete(await ctx.principal(), ids);
  }

  @Subscription(() => JobEventType, {
    description: "starting, started, secondary-status (each SageMaker SecondaryStatusTransition), metrics, stopping, completed (checkpointId), failed (reason), stopped — after `after`, then live",
    subscribe: async ({ args, context }: { args: { id: string; after?: number | null }; context: GraphQLContext }) => context.runtime.trainings.follow(await context.principal(), args.id, args.after ?? 0),
  })
  trainingEvents(@Root() event: StoredEvent, @Arg("id", () => ID) _id: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): JobEventType {
    return toJobEventType(event);
  }

  @Subscription(() => JobEventType, {
    description: "Status changes of a model creation after `after`, then live ones",
    subscribe: async ({ args, context }: { args: { id: string; after?: number | null }; context: GraphQLContext }) => context.runtime.models.followModel(await context.principal(), args.id, args.after ?? 0),
  })
  modelEvents(@Root() event: StoredEvent, @Arg("id", () => ID) _id: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): JobEventType {
    return toJobEventType(event);
  }

  @Mutation(() => MergeType, { description: "Merges two or three checkpoints on an endpoint; the result becomes a new Active checkpoint of yours" })
  async mergeCheckpoints(@Ctx() ctx: GraphQLContext, @Arg("input", () => MergeCheckpointsInput) input: MergeCheckpointsInput): Promise<MergeType> {
    return toMerge(await ctx.runtime.models.merge(await ctx.principal(), withoutNulls({ ...input })));
  }

  @Query(() => MergeType)
  async checkpointMerge(@Ctx() ctx: GraphQLContext, @Arg("id", () => ID) id: string): Promise<MergeType> {
    return toMerge(await ctx.runtime.models.mergeView(await ctx.principal(), id));
  }
}
