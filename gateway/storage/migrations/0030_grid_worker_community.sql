-- grid-worker accounts carry their community (a grid is community and grid)
-- With one community the accounts made before are its own; with several they stay without
-- one, and the console refuses them (403) until `eldercare users community`.
UPDATE users SET community = (SELECT min(community) FROM elders WHERE community <> '')
WHERE role = 'grid_worker' AND community IS NULL
AND (SELECT count(DISTINCT community) FROM elders WHERE community <> '') = 1;
