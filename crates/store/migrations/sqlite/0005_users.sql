-- People who sign in to the web pages with a password: its Argon2id hash (PHC string) only.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL
);
