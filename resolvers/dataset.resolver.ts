import { GraphQLJSONObject } from "graphql-scalars";
import { Arg, Ctx, Field, ID, InputType, Int, Mutation, ObjectType, Query, Resolver, Root, Subscription } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { StoredEvent } from "../src/domain/events.js";
import type { DatasetUploadUrl, DatasetView } from "../src/services/dataset-service.js";
import { JobEventType, toJobEventType } from "./job-event.resolver.js";

@ObjectType("DatasetItem")
export class DatasetItemType {
  @Field(() => String, { description: "The uploaded file's name" })
  filename!: string;

  @Field(() => String, { description: "A label; defaults to the file name" })
  name!: string;

  @Field(() => String, { description: "e.g. image" })
  type!: string;

  @Field(() => GraphQLJSONObject)
  params!: Record<string, unknown>;

  @Field(() => String, { description: "Object key in the bucket" })
  key!: string;

  @Field(() => String, { nullable: true, description: "Presigned GET URL (24 h); set by dataset(name)" })
  previewUrl!: string | null;
}

@ObjectType("Dataset", { description: "A named set of training files (images and captions)" })
export class DatasetType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => String, { description: "Initialed, Enabled or Disabled" })
  status!: string;

  @Field(() => String, { description: "Object key prefix of the files" })
  prefix!: string;

  @Field(() => GraphQLJSONObject, { description: "Free-form parameters, e.g. description" })
  params!: Record<string, unknown>;

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => [String], { description: "Roles it is shared with" })
  allowedRoles!: string[];

  @Field(() => Int)
  fileCount!: number;

  @Field(() => [DatasetItemType], { nullable: true, description: "The files, with preview URLs; set by dataset(name) and createDataset, null in lists" })
  items!: DatasetItemType[] | null;

  @Field(() => Date)
  createdAt!: Date;
}

@ObjectType("DatasetUploadUrl", { description: "Where to PUT one file's bytes" })
class DatasetUploadUrlType {
  @Field(() => String)
  filename!: string;

  @Field(() => String)
  key!: string;

  @Field(() => String, { description: "Presigned PUT URL" })
  url!: string;
}

@ObjectType("DatasetUpload")
class DatasetUploadType {
  @Field(() => DatasetType)
  dataset!: DatasetType;

  @Field(() => [DatasetUploadUrlType])
  uploads!: DatasetUploadUrlType[];
}

@InputType()
class DatasetFileInput {
  @Field(() => String, { description: "No path separators or '..'; .png .jpg .jpeg .webp .bmp .txt .caption .json" })
  filename!: string;

  @Field(() => String, { nullable: true, description: "Defaults to filename" })
  name?: string;

  @Field(() => String, { description: "e.g. image" })
  type!: string;

  @Field(() => GraphQLJSONObject, { nullable: true })
  params?: Record<string, unknown>;
}

@InputType()
class CreateDatasetInput {
  @Field(() => String, { description: "1-20 characters: a letter, then letters, digits, _ or -" })
  name!: string;

  @Field(() => [DatasetFileInput])
  files!: DatasetFileInput[];

  @Field(() => GraphQLJSONObject, { nullable: true, description: "Free-form parameters, e.g. description" })
  params?: Record<string, unknown>;
}

const toType = (v: DatasetView) =>
  Object.assign(new DatasetType(), v, { items: v.items ? v.items.map((i) => Object.assign(new DatasetItemType(), i, { previewUrl: i.previewUrl ?? null })) : null });
const toUpload = (u: DatasetUploadUrl) => Object.assign(new DatasetUploadUrlType(), u);

@Resolver(() => DatasetType)
export class DatasetResolver {
  @Query(() => [DatasetType], { description: "Datasets the caller may see, newest first" })
  async datasets(@Ctx() ctx: GraphQLContext, @Arg("status", () => String, { nullable: true }) status?: string | null): Promise<DatasetType[]> {
    const list = await ctx.runtime.datasets.list(await ctx.principal(), status === null || status === undefined ? {} : { status });
    return list.map(toType);
  }

  @Query(() => DatasetType, { description: "One dataset with its files and preview URLs" })
  async dataset(@Ctx() ctx: GraphQLContext, @Arg("name", () => String) name: string): Promise<DatasetType> {
    return toType(await ctx.runtime.datasets.detail(await ctx.principal(), name));
  }

  @Mutation(() => DatasetUploadType, { description: "Creates an Initialed dataset; PUT each file to its URL, then setDatasetStatus(Enabled)" })
  async createDataset(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateDatasetInput) input: CreateDatasetInput): Promise<DatasetUploadType> {
    const { dataset, uploads } = await ctx.runtime.datasets.create(await ctx.principal(), withoutNulls({ ...input, files: input.files.map((f) => withoutNulls({ ...f })) }));
    return Object.assign(new DatasetUploadType(), { dataset: toType(dataset), uploads: uploads.map(toUpload) });
  }

  @Mutation(() => DatasetType, { description: "Enabled (once every file is in the store) or Disabled" })
  async setDatasetStatus(@Ctx() ctx: GraphQLContext, @Arg("name", () => String) name: string, @Arg("status", () => String) status: string): Promise<DatasetType> {
    return toType(await ctx.runtime.datasets.setStatus(await ctx.principal(), name, status));
  }

  @Mutation(() => [String], { description: "Deletes datasets and every object under them (all or none)" })
  async deleteDatasets(@Ctx() ctx: GraphQLContext, @Arg("names", () => [String]) names: string[]): Promise<string[]> {
    return ctx.runtime.datasets.delete(await ctx.principal(), names);
  }

  @Subscription(() => JobEventType, {
    description: "Status changes of a dataset after `after`, then live ones",
    subscribe: async ({ args, context }: { args: { name: string; after?: number | null }; context: GraphQLContext }) =>
      context.runtime.datasets.follow(await context.principal(), args.name, args.after ?? 0),
  })
  datasetEvents(@Root() event: StoredEvent, @Arg("name", () => String) _name: string, @Arg("after", () => Int, { nullable: true, defaultValue: 0 }) _after: number): JobEventType {
    return toJobEventType(event);
  }
}
