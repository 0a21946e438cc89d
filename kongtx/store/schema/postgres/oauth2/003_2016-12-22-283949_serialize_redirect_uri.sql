-- redirect_uri becomes a JSON array held in text: wrap old single URIs.
UPDATE oauth2_credentials SET redirect_uri = json_build_array(redirect_uri)::text
  WHERE redirect_uri IS NOT NULL AND left(btrim(redirect_uri), 1) <> '[';
