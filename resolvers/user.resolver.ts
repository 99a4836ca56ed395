import { Arg, Ctx, Field, ID, InputType, Mutation, ObjectType, Query, Resolver } from "type-graphql";
import { withoutNulls } from "../src/graphql/absent-inputs.js";
import type { GraphQLContext } from "../src/graphql/context.js";
import type { UserView } from "../src/services/access-service.js";

@ObjectType("User", { description: "A person or program that calls Diffgate. Passwords are never returned." })
export class UserType {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  username!: string;

  @Field(() => [String], { description: "Names of the roles the user holds" })
  roles!: string[];

  @Field(() => [String], { description: "Union of the roles' permissions, as <resource>:<action>" })
  permissions!: string[];

  @Field(() => String, { nullable: true, description: "Username of whoever created this user" })
  creator!: string | null;

  @Field(() => Date)
  createdAt!: Date;
}

@InputType({ description: "Creates a user, or updates one you may manage (password and/or roles)" })
export class CreateUserInput {
  @Field(() => String)
  username!: string;

  @Field(() => String, { nullable: true, description: "At least 8 characters; omit to keep the current one (or for key-only users)" })
  password?: string;

  @Field(() => [String], { nullable: true, description: "Role names; omit to keep the current roles" })
  roles?: string[];
}

function toType(view: UserView): UserType {
  return Object.assign(new UserType(), view);
}

@Resolver(() => UserType)
export class UserResolver {
  @Query(() => UserType, { description: "The calling user" })
  async me(@Ctx() ctx: GraphQLContext): Promise<UserType> {
    return toType(await ctx.runtime.access.me(await ctx.principal()));
  }

  @Query(() => [UserType], { description: "Users visible to the caller: themselves, those they created (user:list), or all (user:all)" })
  async users(@Ctx() ctx: GraphQLContext, @Arg("username", () => String, { nullable: true }) username?: string): Promise<UserType[]> {
    const views = await ctx.runtime.access.listUsers(await ctx.principal(), username === undefined || username === null ? {} : { username });
    return views.map(toType);
  }

  @Mutation(() => UserType)
  async createUser(@Ctx() ctx: GraphQLContext, @Arg("input", () => CreateUserInput) input: CreateUserInput): Promise<UserType> {
    const { user } = await ctx.runtime.access.createUser(await ctx.principal(), withoutNulls({ ...input }));
    return toType(user);
  }

  @Mutation(() => [String], { description: "Deletes users; returns the usernames that were deleted (unknown names are ignored)" })
  async deleteUsers(@Ctx() ctx: GraphQLContext, @Arg("usernames", () => [String]) usernames: string[]): Promise<string[]> {
    return ctx.runtime.access.deleteUsers(await ctx.principal(), usernames);
  }
}
