// A real OpenID Connect provider for the sign-in test: the `oidc-provider` package (npm), with
// its development login and consent pages (any login name signs in as itself). One client,
// `tandem`, whose redirect URI is given; PKCE (S256) required.
// Usage: node provider.mjs MODULE_PATH PORT REDIRECT_URI
const [modulePath, port, redirect] = process.argv.slice(2);
const { default: Provider } = await import(modulePath);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'tandem',
    client_secret: 'tandem-test-secret',
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username', 'name'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.test`, email_verified: true, preferred_username: id, name: id }),
  }),
  cookies: { keys: ['a-test-cookie-key'] },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${issuer}`));
