-- mashape-analytics became galileo.
UPDATE plugins SET name = 'galileo' WHERE name = 'mashape-analytics';
