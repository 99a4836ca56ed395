import { Arg, Ctx, Field, ID, InputType, Mutation, ObjectType, Query, Resolver } from "type-graphql";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { RoleView } from "../src/services/access-service.js";

@ObjectType("Role", { description: "A named set of permissions" })
export class RoleType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;

  @Field(() => [String], { description: "<resource>:<action>; resources train, checkpoint, inference, sagemaker_endpoint, user, role; actions all, create, list" })
  permissions!: string[];

  @Field(() => String, { nullable: true })
  creator!: string | null;

  @Field(() => Boolean, { description: "Built-in roles cannot be changed or deleted" })
  builtin!: boolean;

  @Field(() => Date)
  createdAt!: Date;
}

@InputType()
export class CreateRoleInput {
  @Field(() => String)
  roleName!: string;

  @Field(() => [String])
  permissions!: string[];
}

const toType = (view: RoleView) => Object.assign(new RoleType(), view);

@Resolver(() => RoleType)
export class RoleResolver {
  @Query(() => [RoleType], { description: "Roles visible to the caller: their own, those they created (role:list), or all (role:all)" })
  async roles(@Ctx() ctx: GraphQLContext, @Arg("name", () => String, { nullable: true }) name?: string): Promise<RoleType[]> {
    const views = await ctx.runtime.access.listRoles(await ctx.principal(), name === undefined || name === null ? {} : { role: name });
    return views.map(toType);
  }

  @Mutation(() => RoleType, { description: "Creates a role, or replaces the permissions of one you may manage" })
  async createRole(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateRoleInput) input: CreateRoleInput): Promise<RoleType> {
    const { role } = await ctx.runtime.access.createRole(await ctx.principal(), { ...input });
    return toType(role);
  }

  @Mutation(() => [String], { description: "Deletes roles and removes them from every user; returns the names deleted" })
  async deleteRoles(@Ctx() ctx: GraphQLContext, @Arg("names", () => [String]) names: string[]): Promise<string[]> {
    return ctx.runtime.access.deleteRoles(await ctx.principal(), names);
  }
}
